// Echo tutorial client on the C++ reference implementation, for the
// interop tests (tests/interop_cpp.rs).
//
// Usage: echo_client ADDRESS   (ADDRESS is unix:/path or HOST:PORT, as
// EzRpcClient takes it)
//
// Bootstraps Echo (no service ID: EzRpcClient cannot send one) and runs
// three steps, printing one line each:
//   ping ok          ping("foo") replied "echo:foo"
//   heartbeat ok 3   heartbeat("beat", callback) called our callback 3 times
//   log ok           log("from c++") on getLogger().callback, pipelined
// Exits 0 when all pass; otherwise prints why to stderr and exits 1.
//
// Built by the test from the generated echo_api.capnp.{h,c++}.

#include "echo_api.capnp.h"

#include <capnp/ez-rpc.h>
#include <kj/debug.h>

#include <iostream>
#include <string>

namespace {

// A Callback implemented here, in the client: counts log() calls and
// checks what it is told.
class CountingCallback final : public Callback::Server {
public:
  CountingCallback(int& calls, std::string& wrong) : calls(calls), wrong(wrong) {}

protected:
  kj::Promise<void> log(LogContext context) override {
    auto msg = context.getParams().getMsg();
    if (msg != "beat") {
      wrong = std::string(msg.cStr());
    }
    ++calls;
    return kj::READY_NOW;
  }

private:
  int& calls;
  std::string& wrong;
};

int fail(const std::string& why) {
  std::cerr << "echo_client: " << why << std::endl;
  return 1;
}

}  // namespace

int main(int argc, char* argv[]) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " unix:PATH | HOST:PORT" << std::endl;
    return 2;
  }

  // Outlive the connection: the callback object may be released late.
  int calls = 0;
  std::string wrong;

  try {
    capnp::EzRpcClient client(argv[1]);
    auto& waitScope = client.getWaitScope();
    Echo::Client echo = client.getMain<Echo>();

    {
      auto request = echo.pingRequest();
      request.setMsg("foo");
      auto response = request.send().wait(waitScope);
      auto reply = response.getReply();
      if (reply != "echo:foo") {
        return fail("ping replied \"" + std::string(reply.cStr()) + "\", expected \"echo:foo\"");
      }
      // Over 1024 words: a capnp-actix server sends such results as
      // segments spliced behind its return (far pointers into them).
      std::string longMsg;
      for (int i = 0; i < 40000; i++) longMsg.push_back(static_cast<char>('a' + i % 26));
      auto longRequest = echo.pingRequest();
      longRequest.setMsg(longMsg);
      auto longResponse = longRequest.send().wait(waitScope);
      if (longResponse.getReply() != ("echo:" + longMsg).c_str()) {
        return fail("a long ping was not echoed back");
      }
      std::cout << "ping ok" << std::endl;
    }

    {
      auto request = echo.heartbeatRequest();
      request.setMsg("beat");
      request.setCallback(kj::heap<CountingCallback>(calls, wrong));
      request.send().wait(waitScope);
      if (!wrong.empty()) {
        return fail("callback got \"" + wrong + "\", expected \"beat\"");
      }
      if (calls != 3) {
        return fail("heartbeat made " + std::to_string(calls) + " callback calls, expected 3");
      }
      std::cout << "heartbeat ok " << calls << std::endl;
    }

    {
      // Pipelined: log() goes out before getLogger() has answered.
      auto logger = echo.getLoggerRequest().send().getCallback();
      auto request = logger.logRequest();
      request.setMsg("from c++");
      request.send().wait(waitScope);
      std::cout << "log ok" << std::endl;
    }
  } catch (const kj::Exception& e) {
    return fail(std::string(kj::str(e).cStr()));
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  return 0;
}
