// Echo tutorial service on the C++ reference implementation, for the
// interop tests (tests/interop_cpp.rs).
//
// Usage: echo_server ADDRESS   (ADDRESS is unix:/path or HOST:PORT, as
// EzRpcServer takes it; port 0 picks a free port)
//
// Behaves like the Rust EchoService: ping replies "echo:MSG"; heartbeat
// calls callback.log(MSG) three times, one after the other, and answers
// once the third call has returned; getLogger returns the service's logger,
// which prints "Service logger: MSG" on stdout; createLogger(label) returns
// a new logger printing "LABEL: MSG".
//
// Serves the Echo as its bootstrap capability (EzRpc offers one, under no
// ID). Prints "ready PORT" once listening (PORT is 0 for a Unix socket),
// then serves every connection until killed. Every line is flushed at once.
//
// Built by the test from the generated echo_api.capnp.{h,c++}.

#include "echo_api.capnp.h"

#include <capnp/ez-rpc.h>
#include <kj/async.h>
#include <kj/debug.h>

#include <iostream>
#include <string>

namespace {

class Logger final : public Callback::Server {
public:
  explicit Logger(std::string label) : label(kj::mv(label)) {}

protected:
  kj::Promise<void> log(LogContext context) override {
    auto msg = context.getParams().getMsg();
    std::cout << label << ": " << msg.cStr() << std::endl;
    return kj::READY_NOW;
  }

private:
  std::string label;
};

// Calls `callback.log(msg)`, then again until `remaining` calls are made.
kj::Promise<void> beat(Callback::Client callback, std::string msg, int remaining) {
  if (remaining == 0) {
    return kj::READY_NOW;
  }
  auto request = callback.logRequest();
  request.setMsg(msg);
  return request.send().then(
      [callback, msg, remaining](auto&&) mutable {
        return beat(kj::mv(callback), kj::mv(msg), remaining - 1);
      });
}

class EchoImpl final : public Echo::Server {
public:
  EchoImpl() : logger(kj::heap<Logger>("Service logger")) {}

protected:
  kj::Promise<void> ping(PingContext context) override {
    std::string reply = "echo:";
    reply += context.getParams().getMsg().cStr();
    context.getResults().setReply(reply);
    return kj::READY_NOW;
  }

  kj::Promise<void> heartbeat(HeartbeatContext context) override {
    auto params = context.getParams();
    std::string msg = params.getMsg().cStr();
    auto callback = params.getCallback();
    context.releaseParams();
    return beat(kj::mv(callback), kj::mv(msg), 3);
  }

  kj::Promise<void> getLogger(GetLoggerContext context) override {
    context.getResults().setCallback(logger);
    return kj::READY_NOW;
  }

  kj::Promise<void> createLogger(CreateLoggerContext context) override {
    std::string label = context.getParams().getLabel().cStr();
    context.getResults().setCallback(kj::heap<Logger>(kj::mv(label)));
    return kj::READY_NOW;
  }

private:
  Callback::Client logger;
};

}  // namespace

int main(int argc, char* argv[]) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " unix:PATH | HOST:PORT" << std::endl;
    return 2;
  }
  try {
    capnp::EzRpcServer server(kj::heap<EchoImpl>(), argv[1]);
    auto& waitScope = server.getWaitScope();
    uint port = server.getPort().wait(waitScope);
    std::cout << "ready " << port << std::endl;
    kj::NEVER_DONE.wait(waitScope);
  } catch (const kj::Exception& e) {
    std::cerr << "echo_server: " << kj::str(e).cStr() << std::endl;
    return 1;
  }
}
