// Node's timers phase is one libuv timer, re-armed (for the next deadline,
// at least 1 ms after libuv's cached time) when the timers' JavaScript
// returns, before the last timer's next-ticks run. A timer started from
// such a tick reads the clock into libuv's time (getLibuvNow), so after a
// callback that spun past its period libuv finds its timer due again and
// runs the timers once more in the same phase: the interval runs three
// times before the immediates queued by the callbacks (the 300 ms timeout
// started from the first tick comes later). Without a tick starting a timer
// (second part), the interval runs once per turn, each immediate between.
const log = (s) => console.log(s);
const spin = (ms) => { const end = Date.now() + ms; while (Date.now() < end); };
let n = 0;
const h = setInterval(() => {
  log(`interval ${++n}`);
  if (n === 3) clearInterval(h);
  spin(5);
  const k = n;
  setImmediate(() => log(`immediate ${k}`));
  process.nextTick(() => {
    if (n === 1) setTimeout(() => log('timeout from a tick'), 300);
    else setTimeout(() => {}, 50);
  });
}, 1);
setTimeout(() => {
  let m = 0;
  const g = setInterval(() => {
    log(`quiet interval ${++m}`);
    if (m === 2) clearInterval(g);
    spin(5);
    const k = m;
    setImmediate(() => log(`quiet immediate ${k}`));
  }, 1);
}, 600);
