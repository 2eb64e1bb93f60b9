// An immediate can clear another immediate queued in the same check phase.
const log = (s) => console.log(s);
let b;
setImmediate(() => { log('first'); clearImmediate(b); });
b = setImmediate(() => log('second-should-not-run'));
setImmediate(() => log('third'));
