#!/usr/bin/env node
// Runs tests/tests/grpcio.rs `graceful_stop_under_load_moves_traffic` with
// grpc-js's client instead of ours, to count what a peer fails: the same
// scenario as tests/python/graceful_stop_peer.py (two greeter_server.py
// processes, round_robin, 4 callers, SIGTERM to "a" after 100 successes,
// 100 more after it exits).
//
//   cd target/node-peers && npm install @grpc/grpc-js
//   NODE_PATH=target/node-peers/node_modules node tests/node/graceful_stop_peer.js [runs] [callers]
//
// The servers run with GRPC_LB_TEST_PYTHON or target/test-venv/bin/python.
'use strict';

const { spawn } = require('child_process');
const path = require('path');
const readline = require('readline');
const grpc = require('@grpc/grpc-js');

const root = path.join(__dirname, '..', '..');
const python = process.env.GRPC_LB_TEST_PYTHON || path.join(root, 'target', 'test-venv', 'bin', 'python');
const script = path.join(root, 'tests', 'python', 'greeter_server.py');
const REQUEST = Buffer.from([0x0a, 0x01, 0x74]); // HelloRequest { name: "t" }

function startServer(name) {
  const child = spawn(python, [script, '--name', name], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout });
    lines.once('line', (line) => {
      if (!line.startsWith('listening on ')) reject(new Error(`server ${name}: ${line}`));
      resolve({ child, addr: line.slice('listening on '.length) });
    });
  });
}

function exited(child) {
  return new Promise((resolve) => child.once('exit', resolve));
}

async function runOnce(callers) {
  const a = await startServer('a');
  const b = await startServer('b');
  const client = new grpc.Client(`ipv4:${a.addr},${b.addr}`, grpc.credentials.createInsecure(), {
    'grpc.service_config': JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
  });
  await new Promise((resolve, reject) =>
    client.waitForReady(Date.now() + 20000, (e) => (e ? reject(e) : resolve())));
  let served = 0;
  let calls = 0;
  let stop = false;
  const failures = {};
  let waiters = [];
  const call = () => new Promise((resolve) => {
    client.makeUnaryRequest('/helloworld.Greeter/SayHello', (x) => x, (x) => x, REQUEST,
      { deadline: Date.now() + 20000 }, (error) => resolve(error));
  });
  const loops = Array.from({ length: callers }, async () => {
    while (!stop) {
      const error = await call();
      calls += 1;
      if (error) {
        const key = `${grpc.status[error.code]}: ${error.details}`;
        failures[key] = (failures[key] || 0) + 1;
      } else {
        served += 1;
        waiters = waiters.filter((w) => !w());
      }
    }
  });
  const waitForMore = (more) => {
    const target = served + more;
    return new Promise((resolve) => waiters.push(() => (served >= target ? (resolve(), true) : false)));
  };
  await waitForMore(100);
  const gone = exited(a.child);
  a.child.kill('SIGTERM');
  await gone;
  await waitForMore(100);
  stop = true;
  await Promise.all(loops);
  client.close();
  b.child.kill('SIGKILL');
  await exited(b.child);
  return { calls, failures };
}

async function main() {
  const runs = Number(process.argv[2] || 10);
  const callers = Number(process.argv[3] || 4);
  let total = 0;
  for (let run = 1; run <= runs; run += 1) {
    const { calls, failures } = await runOnce(callers);
    const failed = Object.values(failures).reduce((x, y) => x + y, 0);
    total += failed;
    console.log(`run ${run}: ${calls} calls, ${failed} failed ${JSON.stringify(failures)}`);
  }
  const version = require('@grpc/grpc-js/package.json').version;
  console.log(`grpc-js ${version}: ${total} failed in ${runs} runs`);
}

main().catch((e) => { console.error(e); process.exit(1); });
