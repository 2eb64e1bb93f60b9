// A timer cleared from an immediate before it is due never runs, and one
// refreshed from an immediate runs after timers started before the refresh.
const log = (s) => console.log(s);
const a = setTimeout(() => log('a-should-not-run'), 20);
const b = setTimeout(() => log('b-refreshed'), 20);
setImmediate(() => {
  log('immediate');
  clearTimeout(a);
  setTimeout(() => log('c-started-in-immediate'), 20);
  b.refresh();
});
