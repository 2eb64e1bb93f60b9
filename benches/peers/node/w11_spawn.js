// W11 (shared/bench/WORKLOADS.md) on Node: child_process.spawn of
// /bin/true 2,000 times, at most 8 alive, stdio ignored, each exit
// checked for code 0.
'use strict';
const { spawn } = require('child_process');

const SPAWNS = 2000, PARALLEL = 8;
let started = 0, done = 0;
const c0 = process.cpuUsage();
const t0 = process.hrtime.bigint();

function fail(why) {
  process.stderr.write(`FAIL workload=W11 system=node: ${why}\n`);
  process.exit(1);
}

function start() {
  if (started === SPAWNS) return;
  started++;
  const c = spawn('/bin/true', [], { stdio: 'ignore' });
  c.on('error', e => fail(e.message));
  c.on('exit', (code, signal) => {
    if (code !== 0) fail(`exit ${code} ${signal}`);
    done++;
    if (done === SPAWNS) finish(); else start();
  });
}

function finish() {
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const c = process.cpuUsage(c0);
  const cpu = (c.user + c.system) / 1e6;
  const rss = process.resourceUsage().maxRSS / 1024;
  console.log(`RESULT workload=W11 system=node metric=spawns_per_s value=${(SPAWNS / wall).toFixed(1)} ` +
    `n=${SPAWNS} wall_s=${wall.toFixed(3)} cpu_s=${cpu.toFixed(3)} rss_mb=${rss.toFixed(1)}`);
}

for (let i = 0; i < PARALLEL; i++) start();
