// The classic calculator sample's server on the C++ reference
// implementation, for the interop tests (tests/interop_cpp.rs).
//
// Usage: calc_server ADDRESS   (ADDRESS is unix:/path or HOST:PORT, as
// EzRpcServer takes it; port 0 picks a free port)
//
// Serves a Calculator as its bootstrap capability (EzRpc offers one, under
// no ID): evaluate computes an expression (the arguments of a call
// concurrently, then the call) and returns a Value holding the number;
// defFunction keeps a copy of the body (with the capabilities it names)
// and evaluates it on every call; getOperator hands out add, subtract,
// multiply and divide. previousResult and functions may be capabilities of
// the client (pipelined promises, or functions it implements), which this
// server calls.
//
// Prints "ready PORT" once listening (PORT is 0 for a Unix socket), then
// serves every connection until killed.
//
// Built by the test from the generated calculator.capnp.{h,c++}.

#include "calculator.capnp.h"

#include <capnp/ez-rpc.h>
#include <capnp/message.h>
#include <kj/async.h>
#include <kj/debug.h>

#include <iostream>

namespace {

using Expression = Calculator::Expression;
using Function = Calculator::Function;
using Value = Calculator::Value;
using Operator = Calculator::Operator;

kj::Promise<double> readValue(Value::Client value) {
  return value.readRequest().send().then(
      [](capnp::Response<Value::ReadResults>&& r) { return r.getValue(); });
}

kj::Promise<double> callFunction(Function::Client func, kj::Array<double> args) {
  auto request = func.callRequest();
  auto list = request.initParams(args.size());
  for (size_t i = 0; i < args.size(); ++i) {
    list.set(i, args[i]);
  }
  return request.send().then(
      [](capnp::Response<Function::CallResults>&& r) { return r.getValue(); });
}

// Evaluates `expr`; `args` are the parameters of the function whose body it
// is (`hasArgs` is false at the top level of evaluate). Everything `expr`
// and `args` hold is read before this returns, so they need not outlive the
// promise.
kj::Promise<double> evaluateImpl(Expression::Reader expr, bool hasArgs,
                                 capnp::List<double>::Reader args) {
  switch (expr.which()) {
    case Expression::LITERAL:
      return expr.getLiteral();

    case Expression::PREVIOUS_RESULT:
      return readValue(expr.getPreviousResult());

    case Expression::PARAMETER: {
      uint32_t index = expr.getParameter();
      KJ_REQUIRE(hasArgs, "parameter used outside a function body", index);
      KJ_REQUIRE(index < args.size(), "parameter is out of range", index, args.size());
      return args[index];
    }

    case Expression::CALL: {
      auto call = expr.getCall();
      auto func = call.getFunction();
      auto argPromises = KJ_MAP(param, call.getParams()) {
        return evaluateImpl(param, hasArgs, args);
      };
      return kj::joinPromises(kj::mv(argPromises))
          .then([func = kj::mv(func)](kj::Array<double>&& values) mutable {
            return callFunction(kj::mv(func), kj::mv(values));
          });
    }
  }
  KJ_FAIL_REQUIRE("unknown expression type", static_cast<uint>(expr.which()));
}

class ValueImpl final : public Value::Server {
public:
  explicit ValueImpl(double value) : value(value) {}

protected:
  kj::Promise<void> read(ReadContext context) override {
    context.getResults().setValue(value);
    return kj::READY_NOW;
  }

private:
  double value;
};

class FunctionImpl final : public Function::Server {
public:
  FunctionImpl(uint32_t paramCount, Expression::Reader bodyReader) : paramCount(paramCount) {
    // The builder keeps the capabilities the body names.
    body.setRoot(bodyReader);
  }

protected:
  kj::Promise<void> call(CallContext context) override {
    auto args = context.getParams().getParams();
    KJ_REQUIRE(args.size() == paramCount, "wrong number of parameters", args.size(),
               paramCount);
    return evaluateImpl(body.getRoot<Expression>().asReader(), true, args)
        .then([context](double value) mutable { context.getResults().setValue(value); });
  }

private:
  uint32_t paramCount;
  capnp::MallocMessageBuilder body;
};

class OperatorImpl final : public Function::Server {
public:
  explicit OperatorImpl(Operator op) : op(op) {}

protected:
  kj::Promise<void> call(CallContext context) override {
    auto args = context.getParams().getParams();
    KJ_REQUIRE(args.size() == 2, "an operator takes exactly 2 parameters", args.size());
    double a = args[0];
    double b = args[1];
    double result = 0;
    switch (op) {
      case Operator::ADD:
        result = a + b;
        break;
      case Operator::SUBTRACT:
        result = a - b;
        break;
      case Operator::MULTIPLY:
        result = a * b;
        break;
      case Operator::DIVIDE:
        result = a / b;
        break;
      default:
        KJ_FAIL_REQUIRE("unknown operator", static_cast<uint>(op));
    }
    context.getResults().setValue(result);
    return kj::READY_NOW;
  }

private:
  Operator op;
};

class CalculatorImpl final : public Calculator::Server {
protected:
  kj::Promise<void> evaluate(EvaluateContext context) override {
    // The params stay alive until the answer: evaluateImpl reads them now.
    return evaluateImpl(context.getParams().getExpression(), false,
                        capnp::List<double>::Reader())
        .then([context](double value) mutable {
          context.getResults().setValue(kj::heap<ValueImpl>(value));
        });
  }

  kj::Promise<void> defFunction(DefFunctionContext context) override {
    auto params = context.getParams();
    int32_t count = params.getParamCount();
    KJ_REQUIRE(count >= 0, "paramCount must not be negative", count);
    context.getResults().setFunc(kj::heap<FunctionImpl>(count, params.getBody()));
    return kj::READY_NOW;
  }

  kj::Promise<void> getOperator(GetOperatorContext context) override {
    context.getResults().setFunc(kj::heap<OperatorImpl>(context.getParams().getOp()));
    return kj::READY_NOW;
  }
};

}  // namespace

int main(int argc, char* argv[]) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " unix:PATH | HOST:PORT" << std::endl;
    return 2;
  }
  try {
    capnp::EzRpcServer server(kj::heap<CalculatorImpl>(), argv[1]);
    auto& waitScope = server.getWaitScope();
    uint port = server.getPort().wait(waitScope);
    std::cout << "ready " << port << std::endl;
    kj::NEVER_DONE.wait(waitScope);
  } catch (const kj::Exception& e) {
    std::cerr << "calc_server: " << kj::str(e).cStr() << std::endl;
    return 1;
  }
}
