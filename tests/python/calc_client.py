#!/usr/bin/env python3
"""The classic calculator sample's client checks on pycapnp, for the
interop tests.

Usage: calc_client.py ADDRESS   (ADDRESS is unix:/path or tcp:HOST:PORT)

Bootstraps Calculator (no service ID: pycapnp cannot send one) and makes
the checks of examples/common/calc_service.rs's client, printing one line
"NAME = VALUE" per value read, with the names the Rust checks use:
  123 = 123                           a literal
  add(subtract(123, 45), 67) = 145    operators used before getOperator has
                                      answered
  add(123, 45) = 168                  a result Value, unread, used as
  multiply(previousResult, 2) = 336   previousResult in two evaluations; all
  subtract(previousResult, 68) = 100  nine calls sent before any answer is
                                      awaited
  f(12, 34) = 1234                    defFunction: f(x, y) = x * 100 + y
  g(21) = 4244                        g(x) = f(x, x + 1) * 2, defined with f
                                      still unanswered
  add(pow(2, 4), 3) = 19              pow is a Function implemented here,
                                      which the server calls back
Exits 0 when every value is right (and pow was called exactly once);
otherwise prints the error to stderr and exits 1.
"""

import asyncio
import os
import sys

import capnp

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(HERE, "..", "..", "schemas", "calculator.capnp")
calculator = capnp.load(SCHEMA)
Calculator = calculator.Calculator

STEP_TIMEOUT = 20
TOLERANCE = 1e-9


# Expressions are built here as tuples, then written into requests.
def lit(x):
    return ("literal", float(x))


def prev(value):
    return ("previousResult", value)


def param(index):
    return ("parameter", index)


def call(func, *args):
    return ("call", func, args)


def write(builder, expr):
    kind = expr[0]
    if kind == "call":
        _, func, args = expr
        c = builder.init("call")
        c.function = func
        params = c.init("params", len(args))
        for i, arg in enumerate(args):
            write(params[i], arg)
    else:
        setattr(builder, kind, expr[1])


def get_operator(calc, op):
    """getOperator(op), not awaited: the function is a pipelined promise."""
    return calc.getOperator(op=op).func


def evaluate(calc, expr):
    """evaluate(expr), not awaited: the value is a pipelined promise."""
    request = calc.evaluate_request()
    write(request.init("expression"), expr)
    return request.send().value


def def_function(calc, param_count, body):
    """defFunction(paramCount, body), not awaited."""
    request = calc.defFunction_request()
    request.paramCount = param_count
    write(request.init("body"), body)
    return request.send().func


async def read_value(value):
    response = await asyncio.wait_for(value.read(), STEP_TIMEOUT)
    return response.value


def expect(name, got, want):
    if abs(got - want) > TOLERANCE:
        raise AssertionError(f"{name}: expected {want}, got {got}")
    print(f"{name} = {got:.17g}", flush=True)


class Pow(Calculator.Function.Server):
    """pow(base, exponent), implemented in this client; counts its calls."""

    def __init__(self):
        self.calls = 0

    async def call(self, params, **kwargs):
        if len(params) != 2:
            raise ValueError(f"pow takes exactly 2 parameters, got {len(params)}")
        self.calls += 1
        return params[0] ** params[1]


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
        return await capnp.AsyncIoStream.create_connection(host.strip("[]"), int(port))
    raise ValueError(f"bad address {address!r}: unknown scheme {scheme!r}")


async def main(address):
    stream = await open_stream(address)
    client = capnp.TwoPartyClient(stream)
    calc = client.bootstrap().cast_as(Calculator)

    # A literal.
    expect("123", await read_value(evaluate(calc, lit(123))), 123)

    # Operators used before getOperator has answered.
    add = get_operator(calc, "add")
    subtract = get_operator(calc, "subtract")
    value = evaluate(calc, call(add, call(subtract, lit(123), lit(45)), lit(67)))
    expect("add(subtract(123, 45), 67)", await read_value(value), 145)

    # An unread result used as previousResult twice; everything is sent
    # before the first answer is awaited.
    add = get_operator(calc, "add")
    multiply = get_operator(calc, "multiply")
    subtract = get_operator(calc, "subtract")
    first = evaluate(calc, call(add, lit(123), lit(45)))
    doubled = evaluate(calc, call(multiply, prev(first), lit(2)))
    less = evaluate(calc, call(subtract, prev(first), lit(68)))
    a, b, c = await asyncio.gather(read_value(first), read_value(doubled), read_value(less))
    expect("add(123, 45)", a, 168)
    expect("multiply(previousResult, 2)", b, 336)
    expect("subtract(previousResult, 68)", c, 100)

    # Functions defined on the server; g's body names f before f's
    # definition has been answered.
    add = get_operator(calc, "add")
    multiply = get_operator(calc, "multiply")
    f = def_function(calc, 2, call(add, call(multiply, param(0), lit(100)), param(1)))
    g = def_function(
        calc, 1, call(multiply, call(f, param(0), call(add, param(0), lit(1))), lit(2))
    )
    f_value = evaluate(calc, call(f, lit(12), lit(34)))
    g_value = evaluate(calc, call(g, lit(21)))
    fv, gv = await asyncio.gather(read_value(f_value), read_value(g_value))
    expect("f(12, 34)", fv, 1234)
    expect("g(21)", gv, 4244)

    # A function of ours, called back by the server.
    power = Pow()
    add = get_operator(calc, "add")
    value = evaluate(calc, call(add, call(power, lit(2), lit(4)), lit(3)))
    expect("add(pow(2, 4), 3)", await read_value(value), 19)
    if power.calls != 1:
        raise AssertionError(f"pow was called {power.calls} times, expected once")


def run(address):
    try:
        asyncio.run(capnp.run(main(address)))
    except BaseException as e:  # noqa: BLE001 - report anything, then fail
        print(f"calc_client.py: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: calc_client.py ADDRESS  (unix:/path or tcp:HOST:PORT)", file=sys.stderr)
        sys.exit(2)
    sys.exit(run(sys.argv[1]))
