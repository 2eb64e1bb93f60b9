// An unref'd immediate does not keep the loop alive, but runs in a check
// phase the loop reaches for other reasons (here: a referenced timer is
// pending, so the first turn's check phase runs it). One unref'd from a
// timer callback, with nothing else left, never runs. An unref'd
// immediate does not keep the poll phase from blocking: it runs after the
// wait for the timer. ref() undoes unref().
const log = (s) => console.log(s);
const t0 = Date.now();
const a = setImmediate(() => log(`a runs after the wait: ${Date.now() - t0 >= 15}`));
a.unref();
log(`a.hasRef=${a.hasRef()}`);
const c = setImmediate(() => log('c (unref then ref) runs'));
c.unref();
c.ref();
log(`c.hasRef=${c.hasRef()}`);
setTimeout(() => {
  log('timeout');
  const b = setImmediate(() => log('b-never'));
  b.unref();
}, 20);
