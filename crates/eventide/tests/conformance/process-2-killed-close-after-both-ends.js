// A child killed by a signal: 'exit' and 'close' report the signal and no
// code; 'close' comes after 'exit' and after both stdout's and stderr's
// 'end' (whose order against 'exit' is a race, so not printed).
const { spawn } = require('child_process');
const c = spawn('sleep', ['10'], { stdio: ['ignore', 'pipe', 'pipe'] });
let ends = 0, exited = false;
c.stdout.on('end', () => ends++);
c.stderr.on('end', () => ends++);
c.stdout.resume();
c.stderr.resume();
c.on('exit', (code, sig) => { exited = true; console.log('exit ' + code + ' ' + sig); });
c.on('close', (code, sig) => console.log('close ' + code + ' ' + sig + ' ends=' + ends + ' exited=' + exited));
c.kill('SIGKILL');
