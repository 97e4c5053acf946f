#[path = "../examples/common/echo_service.rs"]
#[allow(dead_code)]
mod echo_service;

use capnp_actix::schemas::echo_api_capnp::{callback, echo};
use capnp_actix::Cap;
use echo_service::*;
use std::time::Duration;

#[actix::test]
async fn smoke_ping_and_pipelined_logger() {
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let echo: Cap<echo::Client> = Cap::new(EchoService::new(
            Duration::from_millis(1),
            Sink::Memory(lines.clone()),
        ));
        let client = echo.client();
        let mut req = client.ping_request();
        req.get().set_msg("foo");
        let reply = req.send().promise.await.unwrap();
        assert_eq!(
            reply.get().unwrap().get_reply().unwrap().to_str().unwrap(),
            "echo:foo"
        );

        let logger = client.get_logger_request().send().pipeline.get_callback();
        let mut req = logger.log_request();
        req.get().set_msg("hello");
        req.send().promise.await.unwrap();
        assert_eq!(lines.lock().unwrap().as_slice(), ["Service logger: hello"]);
        let _ = callback::Client::clone(&logger);
    }
    capnp_actix::debug::assert_all_released().await;
}
