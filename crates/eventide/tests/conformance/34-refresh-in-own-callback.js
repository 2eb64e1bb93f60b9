// A timeout refreshed from its own callback stays: the same callback runs
// again after the delay (here twice more), and hasRef/ref state is kept
// across the runs. A timeout that does not refresh itself runs once.
const log = (s) => console.log(s);
let runs = 0;
const t = setTimeout(() => {
  runs += 1;
  log(`refreshing-${runs} hasRef=${t.hasRef()}`);
  if (runs < 3) t.refresh();
}, 5);
setTimeout(() => log('once'), 8);
setTimeout(() => log(`later runs=${runs}`), 200);
