// An unref'd immediate does not keep the poll phase from blocking: with a
// referenced timer 30 ms away, the loop waits for the timer, and the
// immediate runs in the check phase after that wait, before the timer's
// callback (timers come at the next turn).
const log = (s) => console.log(s);
const t0 = Date.now();
const i = setImmediate(() => log(`immediate after the wait: ${Date.now() - t0 >= 25}`));
i.unref();
setTimeout(() => log('timer'), 30);
