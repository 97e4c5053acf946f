#!/usr/bin/env python3
"""Echo tutorial client on pycapnp, for the interop tests.

Usage: echo_client.py ADDRESS   (ADDRESS is unix:/path or tcp:HOST:PORT)

Connects, bootstraps Echo and runs three steps, printing one line each:
  ping ok          ping("foo") replied "echo:foo"
  heartbeat ok 3   heartbeat("beat", callback) made three callback calls
  log ok           log("from python") on the pipelined getLogger().callback
Exits 0 when all pass; otherwise prints the error to stderr and exits 1.

Over TLS (tcp: only) when ECHO_TLS_TRUST is set: the client verifies the
server's certificate against that PEM file as its only trust anchor (no
host name check, as between vats) and presents the certificate and key in
the PEM files ECHO_TLS_CERT and ECHO_TLS_KEY. This is Python's ssl module,
so OpenSSL does the handshake on this side.
"""

import asyncio
import os
import ssl
import sys

import capnp

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(HERE, "..", "..", "schemas", "echo_api.capnp")
echo_api = capnp.load(SCHEMA)

STEP_TIMEOUT = 20


class Recorder(echo_api.Callback.Server):
    """A callback that keeps every message it is given."""

    def __init__(self):
        self.messages = []

    async def log(self, msg, **kwargs):
        self.messages.append(msg)


async def open_stream(address):
    scheme, sep, rest = address.partition(":")
    if not sep:
        raise ValueError(f"bad address {address!r}: expected unix:PATH or tcp:HOST:PORT")
    if scheme == "unix":
        return await capnp.AsyncIoStream.create_unix_connection(rest)
    if scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        if not colon or not host:
            raise ValueError(f"bad address {address!r}: expected tcp:HOST:PORT")
        host = host.strip("[]")
        context = tls_context()
        if context is None:
            return await capnp.AsyncIoStream.create_connection(host, int(port))
        return await capnp.AsyncIoStream.create_connection(
            host, int(port), ssl=context, server_hostname="capnp"
        )
    raise ValueError(f"bad address {address!r}: unknown scheme {scheme!r}")


def tls_context():
    """The client TLS context the ECHO_TLS_* variables ask for, or None."""
    trust = os.environ.get("ECHO_TLS_TRUST")
    if not trust:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=trust)
    context.load_cert_chain(os.environ["ECHO_TLS_CERT"], os.environ["ECHO_TLS_KEY"])
    return context


def step_ok(line):
    print(line, flush=True)


async def main(address):
    stream = await open_stream(address)
    client = capnp.TwoPartyClient(stream)
    echo = client.bootstrap().cast_as(echo_api.Echo)

    response = await asyncio.wait_for(echo.ping("foo"), STEP_TIMEOUT)
    if response.reply != "echo:foo":
        raise AssertionError(f"ping replied {response.reply!r}, expected 'echo:foo'")
    # Over 1024 words: a capnp-actix server sends such results as segments
    # spliced behind its return (far pointers into them).
    long_msg = "".join(chr(ord("a") + i % 26) for i in range(40000))
    response = await asyncio.wait_for(echo.ping(long_msg), STEP_TIMEOUT)
    if response.reply != "echo:" + long_msg:
        raise AssertionError("a long ping was not echoed back")
    step_ok("ping ok")

    recorder = Recorder()
    await asyncio.wait_for(echo.heartbeat("beat", recorder), STEP_TIMEOUT)
    if recorder.messages != ["beat", "beat", "beat"]:
        raise AssertionError(f"callback received {recorder.messages!r}, expected 3 x 'beat'")
    step_ok(f"heartbeat ok {len(recorder.messages)}")

    # Pipelined: the log call goes out before getLogger has answered.
    logger = echo.getLogger().callback
    await asyncio.wait_for(logger.log("from python"), STEP_TIMEOUT)
    step_ok("log ok")


def run(address):
    try:
        asyncio.run(capnp.run(main(address)))
    except BaseException as e:  # noqa: BLE001 - report anything, then fail
        print(f"echo_client.py: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: echo_client.py ADDRESS  (unix:/path or tcp:HOST:PORT)", file=sys.stderr)
        sys.exit(2)
    sys.exit(run(sys.argv[1]))
