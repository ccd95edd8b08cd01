#!/usr/bin/env python3
"""A gRPC client of the grpc example, generated at run time from
examples/grpc/demo.proto alone (grpcio + grpcio-tools), to prove that a
client in another language can call the example.

    python3 tests/grpc_client.py 127.0.0.1:50051

Reads the keys the example prints: ORG_KEY, READ_KEY, and optionally PAT
(with ORG_ID, default "acme") and ORG_KEY_ID (the id part of ORG_KEY when
unset). Prints every answer; exits 1 on any mismatch.
"""

import os
import sys

import grpc

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "grpc")


def main():
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} HOST:PORT", file=sys.stderr)
        return 2
    address = sys.argv[1]
    org_key = os.environ["ORG_KEY"]
    read_key = os.environ["READ_KEY"]
    pat = os.environ.get("PAT")
    org_id = os.environ.get("ORG_ID", "acme")
    # Tokens are ak_<id>.<secret>; the test passes the id it parsed in Rust.
    org_key_id = os.environ.get("ORG_KEY_ID") or org_key.split("_", 1)[1].split(".", 1)[0]

    # protos_and_services resolves the file on sys.path, so only the .proto
    # is needed: no generated code is checked in.
    sys.path.insert(0, os.path.abspath(PROTO_DIR))
    pb, services = grpc.protos_and_services("demo.proto")

    failures = []

    def expect(label, call, code, check=None):
        try:
            reply = call()
            got = grpc.StatusCode.OK
            shown = f"OK {reply!r}".replace("\n", " ")
        except grpc.RpcError as error:
            reply = None
            got = error.code()
            shown = f"{got.name}: {error.details()}"
        print(f"{label:<44} {shown}")
        if got != code:
            failures.append(f"{label}: expected {code.name}, got {got.name}")
        elif check is not None:
            for problem in check(reply):
                failures.append(f"{label}: {problem}")

    def whoami_of_org_key(reply):
        wanted = {"org": org_id, "kind": "organization", "key_id": org_key_id}
        for field, value in wanted.items():
            if getattr(reply, field) != value:
                yield f"{field} is {getattr(reply, field)!r}, expected {value!r}"

    # A proxy from the environment must not swallow loopback calls.
    with grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)]) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        whoami = services.WhoamiStub(channel)
        objects = services.ObjectsStub(channel)
        expect(
            "Whoami.Get without a key",
            lambda: whoami.Get(pb.WhoamiRequest(), timeout=30),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        expect(
            "Whoami.Get with the org key",
            lambda: whoami.Get(
                pb.WhoamiRequest(),
                metadata=[("authorization", f"Bearer {org_key}")],
                timeout=30,
            ),
            grpc.StatusCode.OK,
            whoami_of_org_key,
        )
        expect(
            "Objects.Create with the read-only key",
            lambda: objects.Create(
                pb.CreateObjectRequest(name="report"),
                metadata=[("x-api-key", read_key)],
                timeout=30,
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        if pat:
            expect(
                "Objects.Create with the personal token",
                lambda: objects.Create(
                    pb.CreateObjectRequest(name="report"),
                    metadata=[("authorization", f"Bearer {pat}"), ("x-org-id", org_id)],
                    timeout=30,
                ),
                grpc.StatusCode.OK,
                lambda reply: [
                    f"{field} is {getattr(reply, field)!r}, expected {value!r}"
                    for field, value in {"name": "report", "org": org_id}.items()
                    if getattr(reply, field) != value
                ],
            )

    for failure in failures:
        print(f"MISMATCH {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
