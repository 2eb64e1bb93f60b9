// An interval and a timeout with the same deadline fire in start order;
// the interval's next run waits a whole period.
const log = (s) => console.log(s);
const spin = (ms) => { const end = Date.now() + ms; while (Date.now() < end); };
let n = 0;
const iv = setInterval(() => { n++; log('interval' + n); if (n === 2) clearInterval(iv); }, 5);
setTimeout(() => log('timeout'), 5);
spin(2);
setTimeout(() => log('timeout-later-start'), 5);
