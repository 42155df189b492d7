#!/usr/bin/env python3
"""A helloworld Greeter served by grpcio (gRPC's C-core, driven from Python).

The integration tests start, kill and restart it as a real process, to check
the Rust channel black-box against a gRPC server written in another language.
It answers like the Rust `NamedGreeter` (crates/grpc-lb-helloworld):

    SayHello { name }  ->  HelloReply { message: "Hello {name} from {backend}" }

and sends the initial metadata entry `x-backend: {backend}`. With the
request metadata `rpc-behavior: sleep-<ms>` it waits that long first.

It also serves `grpc.health.v1.Health` (Check and Watch) for the whole server
("") and for helloworld.Greeter: SERVING at start, NOT_SERVING after SIGUSR1,
SERVING again after SIGUSR2, for the client-side health checking tests. Other
service names are NOT_FOUND (Check) or SERVICE_UNKNOWN (Watch), as in
grpc-go's and grpcio's health servers.

    greeter_server.py [--host HOST] [--port PORT] [--name NAME]
                      [--option KEY=INT ...]

Each --option is passed to grpc.server as a channel argument, e.g.
`--option grpc.http2.max_ping_strikes=1` for the keepalive tests' ping
policy; without any, the server runs with grpcio's defaults. Options whose
key starts with `greeter.` configure this script instead:

    greeter.say_hello_delay_ms=N   SayHello answers after N ms (default 0),
                                   so that calls overlap under load

PORT 0 (the default) picks a free port. Once bound, the server prints exactly
one line, `listening on HOST:PORT` with the actual port, and flushes it, so a
harness waits for that line instead of sleeping. It serves until SIGTERM or
SIGINT, then stops gracefully and exits 0.

No generated code: the two messages have one string field each (field 1,
length-delimited), encoded and decoded by hand below.
"""

import argparse
import signal
import sys
import threading
import time
from concurrent import futures

# SIGTERM and SIGINT stop the server; SIGUSR1 and SIGUSR2 flip its health. The
# main thread takes them with sigwait. They are blocked before grpc is loaded
# and any thread exists, so that every thread gRPC starts inherits the mask: a
# signal the kernel handed to one of those threads would otherwise wait for the
# main thread to wake up, since Python runs handlers only there.
SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2}
signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)

try:
    import grpc
except ImportError as error:
    sys.stderr.write(
        f"greeter_server.py: cannot import grpc ({error}); install it with: "
        "python3 -m pip install -r tests/python/requirements.txt\n"
    )
    sys.exit(3)

SERVICE = "helloworld.Greeter"
BACKEND_METADATA_KEY = "x-backend"
SHUTDOWN_GRACE_SECONDS = 5
# --option keys with this prefix configure the script, not grpc.server.
OWN_OPTION_PREFIX = "greeter."
DELAY_OPTION = "greeter.say_hello_delay_ms"


def read_varint(data, pos):
    value = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 64:
            raise ValueError("varint too long")


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


def decode_string_field_1(data):
    """The string in field 1 of a protobuf message; other fields are skipped."""
    result = ""
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = read_varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 2:
            length, pos = read_varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated field")
            if field == 1:
                result = data[pos : pos + length].decode("utf-8")
            pos += length
        elif wire_type == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
    if pos != len(data):
        raise ValueError("truncated message")
    return result


def encode_string_field_1(text):
    payload = text.encode("utf-8")
    if not payload:
        return b""  # proto3 leaves default values out
    return b"\x0a" + encode_varint(len(payload)) + payload


HEALTH_SERVICE = "grpc.health.v1.Health"
# grpc.health.v1.HealthCheckResponse.ServingStatus
SERVING, NOT_SERVING, SERVICE_UNKNOWN = 1, 2, 3
# How often a blocked Watch looks whether its client has gone.
WATCH_POLL_SECONDS = 1.0


def encode_status(status):
    # HealthCheckResponse { ServingStatus status = 1; }: field 1, varint.
    return b"\x08" + encode_varint(status)


class Health:
    """The health statuses, flipped by signals and watched by clients."""

    def __init__(self):
        self.status = SERVING
        self.changed = threading.Condition()

    def set(self, status):
        with self.changed:
            self.status = status
            self.changed.notify_all()

    def of(self, service):
        return self.status if service in ("", SERVICE) else SERVICE_UNKNOWN

    def check(self, service, context):
        with self.changed:
            status = self.of(service)
        if status == SERVICE_UNKNOWN:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {service!r}")
        return status

    def watch(self, service, context):
        last = None
        while context.is_active():
            with self.changed:
                status = self.of(service)
                if status == last:
                    self.changed.wait(timeout=WATCH_POLL_SECONDS)
                    continue
            last = status
            yield status

    def handler(self):
        return grpc.method_handlers_generic_handler(
            HEALTH_SERVICE,
            {
                "Check": grpc.unary_unary_rpc_method_handler(
                    self.check,
                    request_deserializer=decode_string_field_1,
                    response_serializer=encode_status,
                ),
                "Watch": grpc.unary_stream_rpc_method_handler(
                    self.watch,
                    request_deserializer=decode_string_field_1,
                    response_serializer=encode_status,
                ),
            },
        )


def behavior_delay(context):
    """Seconds to wait before answering, from `rpc-behavior: sleep-<ms>`
    request metadata (as in gRPC's doc/xds-test-descriptions.md)."""
    for key, value in context.invocation_metadata():
        if key == "rpc-behavior" and value.startswith("sleep-"):
            try:
                return int(value[len("sleep-") :]) / 1000.0
            except ValueError:
                return 0.0
    return 0.0


def say_hello_handler(backend, delay_seconds):
    def say_hello(name, context):
        # The request's own `rpc-behavior` wins over the server's delay option.
        delay = behavior_delay(context) or delay_seconds
        if delay > 0:
            time.sleep(delay)
        context.send_initial_metadata(((BACKEND_METADATA_KEY, backend),))
        return f"Hello {name} from {backend}"

    return grpc.unary_unary_rpc_method_handler(
        say_hello,
        request_deserializer=decode_string_field_1,
        response_serializer=encode_string_field_1,
    )


def server_option(text):
    """`KEY=INT` as the (key, value) pair grpc.server takes."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=INT, got {text!r}")
    try:
        return (key, int(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{key}: {value!r} is not an integer") from None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", help="backend name (default: HOST:PORT)")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        type=server_option,
        metavar="KEY=INT",
        help="a grpc.server channel argument with an integer value (repeatable)",
    )
    args = parser.parse_args()
    own = {key: value for key, value in args.option if key.startswith(OWN_OPTION_PREFIX)}
    grpc_options = [(key, value) for key, value in args.option if key not in own]
    unknown = set(own) - {DELAY_OPTION}
    if unknown:
        parser.error(f"unknown option {sorted(unknown)[0]!r}")
    delay_seconds = own.get(DELAY_OPTION, 0) / 1000.0

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        # A restart must not share the port with a process still holding it.
        options=[("grpc.so_reuseport", 0)] + grpc_options,
    )
    host = f"[{args.host}]" if ":" in args.host else args.host
    address = f"{host}:{args.port}"
    port = server.add_insecure_port(address)
    if port == 0:
        sys.stderr.write(f"greeter_server.py: cannot bind {address}\n")
        return 1
    bound = f"{host}:{port}"
    backend = args.name if args.name is not None else bound
    health = Health()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(SERVICE, {"SayHello": say_hello_handler(backend, delay_seconds)}),
            health.handler(),
        )
    )
    server.start()

    print(f"listening on {bound}", flush=True)
    while True:
        signum = signal.sigwait(SIGNALS)
        if signum == signal.SIGUSR1:
            health.set(NOT_SERVING)
        elif signum == signal.SIGUSR2:
            health.set(SERVING)
        else:
            break
    server.stop(grace=SHUTDOWN_GRACE_SECONDS).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
