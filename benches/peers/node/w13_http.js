// W13's Node peer: Node's `http` serving HTTP/1.1 keep-alive, `GET /`
// answering `Hello, World!` as text/plain (else 404), as
// examples/http_server.rs does on eventide. Exits on SIGTERM.
//
//     node w13_http.js 127.0.0.1:PORT
'use strict';
const http = require('http');

const [host, port] = (process.argv[2] || '127.0.0.1:8080').split(':');
const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/') {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end('Hello, World!');
  } else {
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('Not Found');
  }
});
server.listen(Number(port), host, () => {
  const a = server.address();
  console.log(`serving http://${a.address}:${a.port} (node ${process.version})`);
});
process.on('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
});
