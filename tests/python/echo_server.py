#!/usr/bin/env python3
"""Echo tutorial service on pycapnp, for the interop tests.

Usage: echo_server.py ADDRESS   (ADDRESS is unix:/path or tcp:HOST:PORT)

Behaves like the Rust EchoService: ping replies "echo:MSG"; heartbeat calls
callback.log(msg) three times; getLogger returns the service's logger, which
prints "Service logger: MSG" to stdout. Prints "ready" once listening, then
serves every connection until killed.
"""

import asyncio
import os
import sys

import capnp

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(HERE, "..", "..", "schemas", "echo_api.capnp")
echo_api = capnp.load(SCHEMA)


class Logger(echo_api.Callback.Server):
    """Prints each message with its label."""

    def __init__(self, label):
        self.label = label

    async def log(self, msg, **kwargs):
        print(f"{self.label}: {msg}", flush=True)


class Echo(echo_api.Echo.Server):
    def __init__(self):
        self.logger = Logger("Service logger")

    async def ping(self, msg, **kwargs):
        return f"echo:{msg}"

    async def heartbeat(self, msg, callback, **kwargs):
        for _ in range(3):
            await callback.log(msg)

    async def getLogger(self, **kwargs):
        return self.logger

    async def createLogger(self, label, **kwargs):
        return Logger(label)


async def serve_connection(stream):
    server = capnp.TwoPartyServer(stream, bootstrap=Echo())
    await server.on_disconnect()


async def listen(address):
    scheme, sep, rest = address.partition(":")
    if not sep:
        raise ValueError(f"bad address {address!r}: expected unix:PATH or tcp:HOST:PORT")
    if scheme == "unix":
        if os.path.exists(rest):
            os.unlink(rest)
        return await capnp.AsyncIoStream.create_unix_server(serve_connection, rest)
    if scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        if not colon or not host:
            raise ValueError(f"bad address {address!r}: expected tcp:HOST:PORT")
        host = host.strip("[]")
        return await capnp.AsyncIoStream.create_server(serve_connection, host, int(port))
    raise ValueError(f"bad address {address!r}: unknown scheme {scheme!r}")


async def main(address):
    server = await listen(address)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: echo_server.py ADDRESS  (unix:/path or tcp:HOST:PORT)", file=sys.stderr)
        sys.exit(2)
    try:
        asyncio.run(capnp.run(main(sys.argv[1])))
    except KeyboardInterrupt:
        pass
    except Exception as e:  # noqa: BLE001 - report, then fail
        print(f"echo_server.py: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
