'use strict';
// W14 (shared/bench/WORKLOADS.md) on Node.js: W5's echo server (the anchors'
// node/echo_server.js: 'data' -> write, noDelay, backlog 511) run by `cluster`
// with 2 workers (or WORKERS). Node's default scheduling on Linux
// (cluster.SCHED_RR): the primary accepts every connection and hands it to
// the workers in turn. The server's CPU is the primary's and the workers'
// together. Exits by itself after MAX_SECS; SIGTERM or SIGINT to the primary
// ends the workers and then the primary (a worker whose primary is gone
// exits too: its IPC channel closes).
// usage: node w14_echo_cluster.js PORT [MAX_SECS] [WORKERS]
const cluster = require('cluster');
const net = require('net');

const port = Number(process.argv[2]);
const maxSecs = Number(process.argv[3] || 60);
const workers = Number(process.argv[4] || 2);
if (!(port > 0 && port < 65536) || !(maxSecs > 0) || !(workers >= 1)) {
  process.stderr.write('usage: node w14_echo_cluster.js PORT [MAX_SECS] [WORKERS]\n');
  process.exit(64);
}

if (cluster.isPrimary) {
  let listening = 0;
  let stopping = false;
  const stop = (code) => {
    stopping = true;
    for (const id in cluster.workers) cluster.workers[id].process.kill('SIGTERM');
    process.exitCode = code;
    // every worker gone ends the primary; a stuck one is not waited for
    setTimeout(() => process.exit(code), 2000).unref();
  };
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('listening', () => {
    if (++listening === workers) {
      process.stderr.write(`node w14_echo_cluster: ${workers} workers listening on 127.0.0.1:${port} ` +
        `(node ${process.version}, scheduling ${cluster.schedulingPolicy === cluster.SCHED_RR ? 'rr' : 'os'})\n`);
    }
  });
  cluster.on('exit', (worker, code, signal) => {
    if (!stopping) {
      process.stderr.write(`node w14_echo_cluster: worker ${worker.process.pid} died (${signal || code})\n`);
      stop(1);
    }
  });
  setTimeout(() => {
    process.stderr.write('node w14_echo_cluster: lifetime over, exiting\n');
    stop(0);
  }, maxSecs * 1000).unref();
  process.on('SIGTERM', () => stop(0));
  process.on('SIGINT', () => stop(0));
} else {
  const server = net.createServer((sock) => {
    sock.setNoDelay(true);
    sock.on('data', (d) => sock.write(d));
    sock.on('error', () => sock.destroy());
  });
  server.on('error', (e) => {
    process.stderr.write(`node w14_echo_cluster worker: ${e.message}\n`);
    process.exit(1);
  });
  server.listen({ port, host: '127.0.0.1', backlog: 511 });
  process.on('SIGTERM', () => process.exit(0));
}
