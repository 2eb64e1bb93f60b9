// W12 (shared/bench/WORKLOADS.md) on Node: a cat child, 1 GiB written to
// its stdin as 16,384 chunks of 64 KiB (the next after 'drain' when write
// returns false), read back from its stdout and checked byte by byte.
// Chunk j is P XOR (j % 256), P[k] the bits 33.. of the k-th LCG step
// from 1 (see benches/src/bin/workloads/process.rs).
'use strict';
const { spawn } = require('child_process');

const CHUNK = 64 * 1024, CHUNKS = 16384;
function fail(why) {
  process.stderr.write(`FAIL workload=W12 system=node: ${why}\n`);
  process.exit(1);
}

const base = Buffer.alloc(CHUNK);
let x = 1n;
const M = (1n << 64n) - 1n;
for (let k = 0; k < CHUNK; k++) {
  x = (x * 6364136223846793005n + 1442695040888963407n) & M;
  base[k] = Number((x >> 33n) & 255n);
}
const patterns = [];
for (let j = 0; j < 256; j++) {
  const p = Buffer.alloc(CHUNK);
  for (let k = 0; k < CHUNK; k++) p[k] = base[k] ^ j;
  patterns.push(p);
}

const c0 = process.cpuUsage();
const t0 = process.hrtime.bigint();
const c = spawn('cat', [], { stdio: ['pipe', 'pipe', 'inherit'] });
c.on('error', e => fail(e.message));
let written = 0, read = 0, exitCode = null;
function writeNext() {
  while (written < CHUNKS) {
    const ok = c.stdin.write(patterns[written % 256]);
    written++;
    if (!ok) { c.stdin.once('drain', writeNext); return; }
  }
  c.stdin.end();
}
c.stdout.on('data', d => {
  let off = 0;
  while (off < d.length) {
    const j = Math.floor(read / CHUNK), k = read % CHUNK;
    const n = Math.min(d.length - off, CHUNK - k);
    if (j >= CHUNKS || d.compare(patterns[j % 256], k, k + n, off, off + n) !== 0) fail(`wrong bytes at ${read}`);
    read += n; off += n;
  }
});
c.on('exit', code => { exitCode = code; });
c.on('close', () => {
  if (exitCode !== 0) fail(`cat exited ${exitCode}`);
  if (read !== CHUNK * CHUNKS) fail(`read ${read}`);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cu = process.cpuUsage(c0);
  const cpu = (cu.user + cu.system) / 1e6;
  const rss = process.resourceUsage().maxRSS / 1024;
  console.log(`RESULT workload=W12 system=node metric=mb_per_s value=${(read / 1e6 / wall).toFixed(1)} ` +
    `bytes=${read} wall_s=${wall.toFixed(3)} cpu_s=${cpu.toFixed(3)} rss_mb=${rss.toFixed(1)}`);
});
writeNext();
