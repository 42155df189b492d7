#!/usr/bin/env python3
"""Runs tests/tests/grpcio.rs `graceful_stop_under_load_moves_traffic` with
grpcio's own client (C-core) instead of ours, to count what a peer fails.

Two greeter_server.py processes ("a" and "b"), a round_robin channel over
both (`ipv4:` target), 4 threads making fail-fast SayHello calls back to back.
After 100 successes, server "a" gets SIGTERM (a graceful `server.stop(5)`)
and the script waits for it to exit; then 100 more successes, and the calls
stop. Each run prints one line: calls made, and each failure's code and
details, grouped.

    graceful_stop_peer.py [--runs N] [--callers N] [--delay-ms N]

Run it with the tests' interpreter: target/test-venv/bin/python.
"""

import argparse
import collections
import os
import signal
import subprocess
import sys
import threading

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "greeter_server.py")
METHOD = "/helloworld.Greeter/SayHello"
REQUEST = b"\x0a\x01t"  # HelloRequest { name: "t" }


def start_server(name, delay_ms):
    args = [sys.executable, SERVER, "--name", name]
    if delay_ms:
        args += ["--option", f"greeter.say_hello_delay_ms={delay_ms}"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline().strip()
    if not line.startswith("listening on "):
        raise SystemExit(f"server {name} said {line!r}")
    return process, line[len("listening on ") :]


class Load:
    def __init__(self, channel, callers):
        self.call = channel.unary_unary(METHOD)
        self.stop = threading.Event()
        self.lock = threading.Condition()
        self.served = 0
        self.calls = 0
        self.failures = collections.Counter()
        self.threads = [threading.Thread(target=self.run) for _ in range(callers)]
        for thread in self.threads:
            thread.start()

    def run(self):
        while not self.stop.is_set():
            try:
                self.call(REQUEST, timeout=20)
                ok = True
            except grpc.RpcError as error:
                ok = False
                key = f"{error.code().name}: {error.details()}"
            with self.lock:
                self.calls += 1
                if ok:
                    self.served += 1
                    self.lock.notify_all()
                else:
                    self.failures[key] += 1

    def wait_for_more(self, more):
        with self.lock:
            target = self.served + more
            if not self.lock.wait_for(lambda: self.served >= target, timeout=20):
                raise SystemExit(f"fewer than {more} calls succeeded in 20 s")

    def finish(self):
        self.stop.set()
        for thread in self.threads:
            thread.join()


def run_once(callers, delay_ms):
    (a, a_addr), (b, b_addr) = start_server("a", delay_ms), start_server("b", delay_ms)
    try:
        channel = grpc.insecure_channel(
            f"ipv4:{a_addr},{b_addr}",
            options=[("grpc.lb_policy_name", "round_robin")],
        )
        grpc.channel_ready_future(channel).result(timeout=20)
        load = Load(channel, callers)
        load.wait_for_more(100)
        a.send_signal(signal.SIGTERM)
        a.wait()
        load.wait_for_more(100)
        load.finish()
        channel.close()
        return load.calls, load.failures
    finally:
        for process in (a, b):
            if process.poll() is None:
                process.kill()
                process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--delay-ms", type=int, default=0)
    args = parser.parse_args()
    total_failed = 0
    for run in range(1, args.runs + 1):
        calls, failures = run_once(args.callers, args.delay_ms)
        failed = sum(failures.values())
        total_failed += failed
        print(f"run {run}: {calls} calls, {failed} failed {dict(failures)}", flush=True)
    print(f"grpcio {grpc.__version__}: {total_failed} failed in {args.runs} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
