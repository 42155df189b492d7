#!/usr/bin/env python3
"""A grpclb client in grpcio (gRPC's C-core, driven from Python), to check the
tests' tonic balancer against a grpclb client that is not ours.

    grpclb_client.py --target dns://127.0.0.1:PORT/greeter.test:PORT
                     [--wait-for PREFIX ...] [--calls N] [--deadline S]

The channel selects grpclb by service config
(`{"loadBalancingConfig":[{"grpclb":{}}]}`) and has C-core's DNS resolver
look up the balancers in the SRV records `_grpclb._tcp.<host>`
(`grpc.dns_enable_srv_queries`); the authority of the target names the DNS
server (c-ares). It calls helloworld.Greeter/SayHello until one reply starts
with each --wait-for prefix, then makes --calls calls, and prints one JSON
line: the replies by text, the failures by "CODE: details", and the totals of
every call it made (the warm-up included), for the balancer's reports.

No generated code: the two messages have one string field each (field 1,
length-delimited), encoded and decoded by hand.
"""

import argparse
import json
import os
import sys
import time

# c-ares is the resolver that asks the DNS server of the target's authority
# and does SRV lookups; set before grpc loads.
os.environ.setdefault("GRPC_DNS_RESOLVER", "ares")

try:
    import grpc
except ImportError as error:
    sys.stderr.write(f"grpclb_client.py: cannot import grpc ({error})\n")
    sys.exit(3)


def encode_request(name):
    data = name.encode()
    return b"\x0a" + encode_varint(len(data)) + data


def encode_varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_reply(data):
    # field 1, wire type 2: tag, varint length, bytes
    if not data:
        return ""
    if data[0] != 0x0A:
        raise ValueError(f"unexpected tag {data[0]}")
    length, shift, at = 0, 0, 1
    while True:
        byte = data[at]
        at += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return data[at : at + length].decode()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--wait-for", action="append", default=[])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--deadline", type=float, default=20.0)
    args = parser.parse_args()

    config = json.dumps({"loadBalancingConfig": [{"grpclb": {}}]})
    options = [
        ("grpc.service_config", config),
        ("grpc.dns_enable_srv_queries", 1),
    ]
    channel = grpc.insecure_channel(args.target, options=options)
    say_hello = channel.unary_unary(
        "/helloworld.Greeter/SayHello",
        request_serializer=encode_request,
        response_deserializer=decode_reply,
    )
    totals = {"calls": 0, "dropped": 0, "replies": 0, "other_failures": 0}

    def call():
        totals["calls"] += 1
        try:
            reply = say_hello("grpcio", timeout=5, wait_for_ready=True)
            totals["replies"] += 1
            return reply, None
        except grpc.RpcError as error:
            failure = f"{error.code().name}: {error.details()}"
            if "drop" in (error.details() or ""):
                totals["dropped"] += 1
            else:
                totals["other_failures"] += 1
            return None, failure

    end = time.monotonic() + args.deadline
    waiting = list(args.wait_for)
    last_failure = None
    while waiting:
        if time.monotonic() > end:
            print(json.dumps({"error": f"no reply starting with {waiting} in time",
                              "last_failure": last_failure, "totals": totals}))
            sys.stdout.flush()
            return 1
        reply, failure = call()
        last_failure = failure or last_failure
        if reply is not None:
            waiting = [p for p in waiting if not reply.startswith(p)]

    replies, failures = {}, {}
    for _ in range(args.calls):
        reply, failure = call()
        if reply is not None:
            replies[reply] = replies.get(reply, 0) + 1
        else:
            failures[failure] = failures.get(failure, 0) + 1
    # The last load report goes out at the next interval: stay a little so
    # that it does (the harness waits on the balancer for it, not on time).
    print(json.dumps({"replies": replies, "failures": failures, "totals": totals}))
    sys.stdout.flush()
    # Wait for the harness to close stdin before closing the channel, so the
    # client's last report is sent on the open stream.
    sys.stdin.read()
    channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
