// Lines written to a `sort` child's stdin, then its end: the sorted
// output, then 'close' with code 0 after 'exit'.
const { spawn } = require('child_process');
const c = spawn('sort', [], { stdio: ['pipe', 'pipe', 'inherit'] });
let out = '', exited = false;
c.stdout.on('data', d => out += d);
c.on('exit', (code, sig) => { exited = true; });
c.on('close', (code, sig) => {
  for (const l of out.split('\n').filter(Boolean)) console.log('line ' + l);
  console.log('close ' + code + ' ' + sig + ' exited=' + exited);
});
c.stdin.write('pear\napple\n');
c.stdin.write('fig\n');
c.stdin.end();
