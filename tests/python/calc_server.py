#!/usr/bin/env python3
"""The classic calculator sample's server on pycapnp, for the interop tests.

Usage: calc_server.py ADDRESS   (ADDRESS is unix:/path or tcp:HOST:PORT;
port 0 picks a free port)

Serves a Calculator as the bootstrap capability of every connection:
evaluate computes an expression (the arguments of a call concurrently, then
the call) and returns a Value holding the number; defFunction keeps a copy
of the body (with the capabilities it names) and evaluates it on each call;
getOperator hands out add, subtract, multiply and divide. previousResult
values and functions may be capabilities of the client (pipelined promises,
or functions it implements), which this server calls.

Prints "ready PORT" once listening (PORT is 0 for a Unix socket), then
serves until killed.
"""

import asyncio
import os
import sys

import capnp

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(HERE, "..", "..", "schemas", "calculator.capnp")
calculator = capnp.load(SCHEMA)
Calculator = calculator.Calculator


async def call_function(func, values):
    response = await func.call(values)
    return response.value


async def evaluate_impl(expression, args=None):
    """Evaluates `expression`; `args` are the parameters of the function
    whose body it is (None at the top level of evaluate)."""
    which = expression.which()
    if which == "literal":
        return expression.literal
    if which == "previousResult":
        response = await expression.previousResult.read()
        return response.value
    if which == "parameter":
        index = expression.parameter
        if args is None:
            raise ValueError(f"parameter {index} used outside a function body")
        if index >= len(args):
            raise ValueError(
                f"parameter {index} is out of range: the function has {len(args)} parameter(s)"
            )
        return args[index]
    if which == "call":
        call = expression.call
        func = call.function
        values = await asyncio.gather(*(evaluate_impl(p, args) for p in call.params))
        return await call_function(func, list(values))
    raise ValueError(f"unknown expression type {which!r}")


class ValueImpl(Calculator.Value.Server):
    def __init__(self, value):
        self.value = value

    async def read(self, **kwargs):
        return self.value


class FunctionImpl(Calculator.Function.Server):
    """A function defined with defFunction: a copy of its body, evaluated on
    every call."""

    def __init__(self, param_count, body):
        self.param_count = param_count
        self.body = body.as_builder()

    async def call(self, params, **kwargs):
        if len(params) != self.param_count:
            raise ValueError(
                f"function takes {self.param_count} parameter(s), got {len(params)}"
            )
        return await evaluate_impl(self.body, list(params))


OPERATORS = {
    "add": lambda a, b: a + b,
    "subtract": lambda a, b: a - b,
    "multiply": lambda a, b: a * b,
    "divide": lambda a, b: a / b,
}


class OperatorImpl(Calculator.Function.Server):
    def __init__(self, op):
        self.op = op

    async def call(self, params, **kwargs):
        if len(params) != 2:
            raise ValueError(f"operator {self.op} takes exactly 2 parameters, got {len(params)}")
        return OPERATORS[self.op](params[0], params[1])


class CalculatorImpl(Calculator.Server):
    async def evaluate(self, expression, **kwargs):
        return ValueImpl(await evaluate_impl(expression))

    async def defFunction(self, paramCount, body, **kwargs):
        if paramCount < 0:
            raise ValueError(f"defFunction: paramCount must not be negative (got {paramCount})")
        return FunctionImpl(paramCount, body)

    async def getOperator(self, op, **kwargs):
        if op not in OPERATORS:
            raise ValueError(f"getOperator: unknown operator {op!r}")
        return OperatorImpl(op)


async def serve_connection(stream):
    server = capnp.TwoPartyServer(stream, bootstrap=CalculatorImpl())
    await server.on_disconnect()


async def listen(address):
    """Starts listening; returns the server and the port (0 for Unix)."""
    scheme, sep, rest = address.partition(":")
    if not sep:
        raise ValueError(f"bad address {address!r}: expected unix:PATH or tcp:HOST:PORT")
    if scheme == "unix":
        if os.path.exists(rest):
            os.unlink(rest)
        return await capnp.AsyncIoStream.create_unix_server(serve_connection, rest), 0
    if scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        if not colon or not host:
            raise ValueError(f"bad address {address!r}: expected tcp:HOST:PORT")
        server = await capnp.AsyncIoStream.create_server(
            serve_connection, host.strip("[]"), int(port)
        )
        return server, server.sockets[0].getsockname()[1]
    raise ValueError(f"bad address {address!r}: unknown scheme {scheme!r}")


async def main(address):
    server, port = await listen(address)
    print(f"ready {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: calc_server.py ADDRESS  (unix:/path or tcp:HOST:PORT)", file=sys.stderr)
        sys.exit(2)
    try:
        asyncio.run(capnp.run(main(sys.argv[1])))
    except KeyboardInterrupt:
        pass
    except Exception as e:  # noqa: BLE001 - report, then fail
        print(f"calc_server.py: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
