#!/usr/bin/env python3
"""A grpcio server with server reflection (grpcio-reflection), for the tests
of `grpc-lb call`, `list` and `describe` against a gRPC implementation that is
not ours.

It serves `grpclb.pytest.Echo`, whose schema exists only in this process: the
file `grpclb/pytest/echo.proto` is built here as a FileDescriptorProto and
added to protobuf's default descriptor pool, which grpcio-reflection answers
from. That file imports `google/protobuf/wrappers.proto`, so a client must
fetch an import by name too.

    Say(EchoRequest) returns (EchoReply)            unary
    Repeat(EchoRequest) returns (stream EchoReply)  server streaming

    EchoRequest { string text = 1; google.protobuf.Int32Value times = 2; }
    EchoReply   { string text = 1; int32 index = 2; string greeting = 3; }

Say answers `text` once (index 0) with `greeting` set to the request's
`x-greeting` metadata; Repeat answers it `times` times (default 1), indexes
0, 1, ... grpcio-reflection serves `grpc.reflection.v1alpha` only, so a
client that asks v1 first must fall back.

    reflection_server.py [--host HOST] [--port PORT]

PORT 0 (the default) picks a free port. Once bound, it prints exactly one
line, `listening on HOST:PORT`, and serves until SIGTERM or SIGINT.
"""

import argparse
import signal
import sys
from concurrent import futures

SIGNALS = {signal.SIGTERM, signal.SIGINT}
signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)

try:
    import grpc
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from google.protobuf import wrappers_pb2  # noqa: F401 (puts wrappers.proto in the pool)
    from grpc_reflection.v1alpha import reflection
except ImportError as error:
    sys.stderr.write(
        f"reflection_server.py: cannot import grpc or grpc_reflection ({error}); "
        "install them with: python3 -m pip install -r tests/python/requirements.txt\n"
    )
    sys.exit(3)

PACKAGE = "grpclb.pytest"
SERVICE = PACKAGE + ".Echo"


def echo_file():
    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="grpclb/pytest/echo.proto",
        package=PACKAGE,
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    request = file.message_type.add(name="EchoRequest")
    request.field.add(name="text", json_name="text", number=1,
                      type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    request.field.add(name="times", json_name="times", number=2,
                      type=field.TYPE_MESSAGE, label=field.LABEL_OPTIONAL,
                      type_name=".google.protobuf.Int32Value")
    reply = file.message_type.add(name="EchoReply")
    reply.field.add(name="text", json_name="text", number=1,
                    type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    reply.field.add(name="index", json_name="index", number=2,
                    type=field.TYPE_INT32, label=field.LABEL_OPTIONAL)
    reply.field.add(name="greeting", json_name="greeting", number=3,
                    type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    service = file.service.add(name="Echo")
    service.method.add(name="Say", input_type=f".{PACKAGE}.EchoRequest",
                       output_type=f".{PACKAGE}.EchoReply")
    service.method.add(name="Repeat", input_type=f".{PACKAGE}.EchoRequest",
                       output_type=f".{PACKAGE}.EchoReply", server_streaming=True)
    return file


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    pool = descriptor_pool.Default()
    pool.Add(echo_file())
    EchoRequest = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(PACKAGE + ".EchoRequest"))
    EchoReply = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(PACKAGE + ".EchoReply"))

    def say(request, context):
        metadata = dict(context.invocation_metadata())
        return EchoReply(text=request.text, index=0,
                         greeting=metadata.get("x-greeting", ""))

    def repeat(request, context):
        times = request.times.value if request.HasField("times") else 1
        for index in range(times):
            yield EchoReply(text=request.text, index=index)

    handlers = {
        "Say": grpc.unary_unary_rpc_method_handler(
            say, request_deserializer=EchoRequest.FromString,
            response_serializer=EchoReply.SerializeToString),
        "Repeat": grpc.unary_stream_rpc_method_handler(
            repeat, request_deserializer=EchoRequest.FromString,
            response_serializer=EchoReply.SerializeToString),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, handlers),))
    reflection.enable_server_reflection((SERVICE, reflection.SERVICE_NAME), server)
    host = args.host
    port = server.add_insecure_port(f"{host}:{args.port}")
    if port == 0:
        sys.stderr.write(f"reflection_server.py: cannot bind {host}:{args.port}\n")
        sys.exit(1)
    server.start()
    print(f"listening on {host}:{port}", flush=True)
    signal.sigwait(SIGNALS)
    server.stop(grace=2).wait()


if __name__ == "__main__":
    main()
