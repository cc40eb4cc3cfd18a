'use strict';

// Not part of the AWF sidecar: preloaded by benches/peers.sh (`node -r ./bench-shim.js
// server.js`) so that the unmodified sidecar can run on one machine next to the bench's mock.
// It changes where sockets go, nothing else (see README.md):
//
// 1. Upstream: the sidecar always dials `<target>:443` (upstream-http.js hard-codes port 443;
//    OPENAI_API_TARGET takes a host name only). A TLS connection to api.openai.com:443 is
//    dialled to BENCH_UPSTREAM (the mock, 127.0.0.1:PORT) instead, with SNI and certificate
//    verification still for api.openai.com (the mock's CA comes from NODE_EXTRA_CA_CERTS;
//    rejectUnauthorized stays at its default, true). Host header, path, pooling (Node's
//    https.globalAgent) and everything else are the sidecar's own.
// 2. Listeners: the sidecar listens on 0.0.0.0:10000 (OpenAI) and 10001-10004 (the other
//    providers' stub servers), all hard-coded. 10000 becomes BENCH_LISTEN (127.0.0.1:PORT); the
//    others 127.0.0.1 on a free port, so nothing listens beyond loopback or on a fixed port.

const net = require('net');
const tls = require('tls');

function hostPort(value, name) {
  const m = /^(.+):(\d+)$/.exec(value || '');
  if (!m) throw new Error(`bench-shim: ${name} must be HOST:PORT, got ${JSON.stringify(value)}`);
  return { host: m[1], port: Number(m[2]) };
}

const upstream = hostPort(process.env.BENCH_UPSTREAM, 'BENCH_UPSTREAM');
const listen = hostPort(process.env.BENCH_LISTEN, 'BENCH_LISTEN');
const UPSTREAM_HOST = process.env.BENCH_UPSTREAM_HOST || 'api.openai.com';

const tlsConnect = tls.connect;
tls.connect = function connect(...args) {
  const opts = args[0];
  if (opts && typeof opts === 'object' && opts.host === UPSTREAM_HOST && Number(opts.port) === 443) {
    args[0] = {
      ...opts,
      host: upstream.host,
      port: upstream.port,
      servername: opts.servername || UPSTREAM_HOST,
    };
  }
  return tlsConnect.apply(this, args);
};

const serverListen = net.Server.prototype.listen;
net.Server.prototype.listen = function listenOnLoopback(...args) {
  if (typeof args[0] === 'number' && args[0] >= 10000 && args[0] <= 10004) {
    const port = args[0] === 10000 ? listen.port : 0;
    const host = args[0] === 10000 ? listen.host : '127.0.0.1';
    const rest = args.slice(1).filter((a) => typeof a === 'function');
    return serverListen.call(this, port, host, ...rest);
  }
  return serverListen.apply(this, args);
};
