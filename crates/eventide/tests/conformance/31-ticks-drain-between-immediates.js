// nextTicks and microtasks queued by an immediate run before the next immediate.
const log = (s) => console.log(s);
setImmediate(() => {
  log('imm1');
  Promise.resolve().then(() => log('imm1.promise'));
  process.nextTick(() => log('imm1.tick'));
});
setImmediate(() => log('imm2'));
