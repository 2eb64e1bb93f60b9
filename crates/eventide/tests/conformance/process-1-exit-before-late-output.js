// A child exits while a grandchild keeps its stdout open and writes
// later: 'exit' comes first, then the late data, stdout's 'end', and
// 'close' (which waits for every readable stdio stream).
const { spawn } = require('child_process');
const c = spawn('sh', ['-c', '(sleep 0.3; echo late) & exit 0'], { stdio: ['ignore', 'pipe', 'ignore'] });
c.stdout.on('data', d => console.log('data ' + JSON.stringify(d.toString())));
c.stdout.on('end', () => console.log('stdout end'));
c.on('exit', (code, sig) => console.log('exit ' + code + ' ' + sig));
c.on('close', (code, sig) => console.log('close ' + code + ' ' + sig));
