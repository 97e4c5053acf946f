// The classic calculator sample's client checks on the C++ reference
// implementation, for the interop tests (tests/interop_cpp.rs).
//
// Usage: calc_client ADDRESS   (ADDRESS is unix:/path or HOST:PORT, as
// EzRpcClient takes it)
//
// Bootstraps Calculator (no service ID: EzRpcClient cannot send one) and
// makes the checks of examples/common/calc_service.rs's client, printing
// one line "NAME = VALUE" per value read, with the names the Rust checks
// use:
//   123 = 123                            a literal
//   add(subtract(123, 45), 67) = 145     operators used before getOperator
//                                        has answered
//   add(123, 45) = 168                   a result Value, unread, used as
//   multiply(previousResult, 2) = 336    previousResult in two evaluations;
//   subtract(previousResult, 68) = 100   all nine calls sent before any
//                                        answer is awaited
//   f(12, 34) = 1234                     defFunction: f(x, y) = x * 100 + y
//   g(21) = 4244                         g(x) = f(x, x + 1) * 2, defined
//                                        with f still unanswered
//   add(pow(2, 4), 3) = 19               pow is a Function implemented here,
//                                        which the server calls back
// Exits 0 when every value is right (and pow was called exactly once);
// otherwise prints why to stderr and exits 1.
//
// Built by the test from the generated calculator.capnp.{h,c++}.

#include "calculator.capnp.h"

#include <capnp/ez-rpc.h>
#include <kj/debug.h>

#include <cmath>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

using Expression = Calculator::Expression;
using Function = Calculator::Function;
using Value = Calculator::Value;
using Operator = Calculator::Operator;

// An expression to send, built here. Capabilities in it (functions,
// previous results) are shared, so one expression can be written into
// several requests.
class Expr {
public:
  static Expr lit(double x) { return Expr(std::make_shared<Lit>(x)); }
  static Expr prev(Value::Client v) { return Expr(std::make_shared<Prev>(kj::mv(v))); }
  static Expr param(uint32_t i) { return Expr(std::make_shared<Param>(i)); }
  static Expr call(Function::Client f, std::vector<Expr> args) {
    return Expr(std::make_shared<Call>(kj::mv(f), kj::mv(args)));
  }

  void write(Expression::Builder b) const { node->write(b); }

private:
  struct Node {
    virtual ~Node() noexcept(false) = default;  // capabilities may throw on release
    virtual void write(Expression::Builder b) = 0;
  };
  struct Lit final : Node {
    explicit Lit(double x) : x(x) {}
    void write(Expression::Builder b) override { b.setLiteral(x); }
    double x;
  };
  struct Prev final : Node {
    explicit Prev(Value::Client v) : v(kj::mv(v)) {}
    void write(Expression::Builder b) override { b.setPreviousResult(v); }
    Value::Client v;
  };
  struct Param final : Node {
    explicit Param(uint32_t i) : i(i) {}
    void write(Expression::Builder b) override { b.setParameter(i); }
    uint32_t i;
  };
  struct Call final : Node {
    Call(Function::Client f, std::vector<Expr> args) : f(kj::mv(f)), args(kj::mv(args)) {}
    void write(Expression::Builder b) override {
      auto call = b.initCall();
      call.setFunction(f);
      auto params = call.initParams(args.size());
      for (size_t i = 0; i < args.size(); ++i) {
        args[i].write(params[i]);
      }
    }
    Function::Client f;
    std::vector<Expr> args;
  };

  explicit Expr(std::shared_ptr<Node> node) : node(kj::mv(node)) {}
  std::shared_ptr<Node> node;
};

// getOperator(op), not awaited: the function is a pipelined promise.
Function::Client getOperator(Calculator::Client& calc, Operator op) {
  auto request = calc.getOperatorRequest();
  request.setOp(op);
  return request.send().getFunc();
}

// evaluate(expr), not awaited: the value is a pipelined promise.
Value::Client evaluate(Calculator::Client& calc, const Expr& expr) {
  auto request = calc.evaluateRequest();
  expr.write(request.initExpression());
  return request.send().getValue();
}

// defFunction(paramCount, body), not awaited.
Function::Client defFunction(Calculator::Client& calc, int32_t paramCount, const Expr& body) {
  auto request = calc.defFunctionRequest();
  request.setParamCount(paramCount);
  body.write(request.initBody());
  return request.send().getFunc();
}

// read() sent now; the caller waits for the answer.
kj::Promise<double> read(Value::Client& value) {
  return value.readRequest().send().then(
      [](capnp::Response<Value::ReadResults>&& r) { return r.getValue(); });
}

// Prints "NAME = VALUE"; throws if VALUE is not WANT.
void expect(const std::string& name, double got, double want) {
  if (std::fabs(got - want) > 1e-9) {
    std::ostringstream why;
    why << name << ": expected " << want << ", got " << got;
    throw std::runtime_error(why.str());
  }
  std::cout << name << " = " << std::setprecision(17) << got << std::endl;
}

// pow(base, exponent), implemented in this client; counts its calls.
class PowFunction final : public Function::Server {
public:
  explicit PowFunction(int& calls) : calls(calls) {}

protected:
  kj::Promise<void> call(CallContext context) override {
    auto params = context.getParams().getParams();
    KJ_REQUIRE(params.size() == 2, "pow takes exactly 2 parameters", params.size());
    ++calls;
    context.getResults().setValue(std::pow(params[0], params[1]));
    return kj::READY_NOW;
  }

private:
  int& calls;
};

int fail(const std::string& why) {
  std::cerr << "calc_client: " << why << std::endl;
  return 1;
}

}  // namespace

int main(int argc, char* argv[]) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " unix:PATH | HOST:PORT" << std::endl;
    return 2;
  }

  // Outlives the connection: the server may release pow late.
  int powCalls = 0;

  try {
    capnp::EzRpcClient client(argv[1]);
    auto& waitScope = client.getWaitScope();
    Calculator::Client calc = client.getMain<Calculator>();
    auto lit = Expr::lit;

    {
      // A literal.
      auto value = evaluate(calc, lit(123));
      expect("123", read(value).wait(waitScope), 123);
    }

    {
      // Operators used before getOperator has answered.
      auto add = getOperator(calc, Calculator::Operator::ADD);
      auto subtract = getOperator(calc, Calculator::Operator::SUBTRACT);
      auto value = evaluate(
          calc, Expr::call(add, {Expr::call(subtract, {lit(123), lit(45)}), lit(67)}));
      expect("add(subtract(123, 45), 67)", read(value).wait(waitScope), 145);
    }

    {
      // An unread result used as previousResult twice; everything is sent
      // before the first answer is awaited.
      auto add = getOperator(calc, Calculator::Operator::ADD);
      auto multiply = getOperator(calc, Calculator::Operator::MULTIPLY);
      auto subtract = getOperator(calc, Calculator::Operator::SUBTRACT);
      auto first = evaluate(calc, Expr::call(add, {lit(123), lit(45)}));
      auto doubled = evaluate(calc, Expr::call(multiply, {Expr::prev(first), lit(2)}));
      auto less = evaluate(calc, Expr::call(subtract, {Expr::prev(first), lit(68)}));
      auto a = read(first);
      auto b = read(doubled);
      auto c = read(less);
      expect("add(123, 45)", a.wait(waitScope), 168);
      expect("multiply(previousResult, 2)", b.wait(waitScope), 336);
      expect("subtract(previousResult, 68)", c.wait(waitScope), 100);
    }

    {
      // Functions defined on the server; g's body names f before f's
      // definition has been answered.
      auto add = getOperator(calc, Calculator::Operator::ADD);
      auto multiply = getOperator(calc, Calculator::Operator::MULTIPLY);
      auto f = defFunction(
          calc, 2,
          Expr::call(add, {Expr::call(multiply, {Expr::param(0), lit(100)}), Expr::param(1)}));
      auto g = defFunction(
          calc, 1,
          Expr::call(multiply,
                     {Expr::call(f, {Expr::param(0), Expr::call(add, {Expr::param(0), lit(1)})}),
                      lit(2)}));
      auto fValue = evaluate(calc, Expr::call(f, {lit(12), lit(34)}));
      auto gValue = evaluate(calc, Expr::call(g, {lit(21)}));
      auto fv = read(fValue);
      auto gv = read(gValue);
      expect("f(12, 34)", fv.wait(waitScope), 1234);
      expect("g(21)", gv.wait(waitScope), 4244);
    }

    {
      // A function of ours, called back by the server.
      Function::Client pow = kj::heap<PowFunction>(powCalls);
      auto add = getOperator(calc, Calculator::Operator::ADD);
      auto value = evaluate(
          calc, Expr::call(add, {Expr::call(pow, {lit(2), lit(4)}), lit(3)}));
      expect("add(pow(2, 4), 3)", read(value).wait(waitScope), 19);
      if (powCalls != 1) {
        return fail("pow was called " + std::to_string(powCalls) + " times, expected once");
      }
    }
  } catch (const kj::Exception& e) {
    return fail(std::string(kj::str(e).cStr()));
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  return 0;
}
