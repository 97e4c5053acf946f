//! Errors a user reads name what went wrong (issue 14, item 4).

#[path = "../examples/common/echo_service.rs"]
#[allow(dead_code)]
mod echo_service;

use std::time::Duration;

use capnp_actix::schemas::calculator_capnp::calculator;
use capnp_actix::schemas::echo_api_capnp::echo;
use capnp_actix::Cap;
use echo_service::{EchoService, Sink};

#[actix::test]
async fn a_method_the_capability_lacks_is_named_in_unimplemented() {
    let echo: Cap<echo::Client> = Cap::new(EchoService::new(
        Duration::from_millis(1),
        Sink::Memory(Default::default()),
    ));
    // The echo service asked for a calculator method: an interface it
    // does not implement.
    let wrong: Cap<calculator::Client> = echo.clone().cast();
    let e = wrong
        .client()
        .get_operator_request()
        .send()
        .promise
        .await
        .err()
        .expect("the echo service is no calculator");
    assert_eq!(e.kind, capnp::ErrorKind::Unimplemented);
    let reason = e.to_string();
    assert!(
        reason.contains("method @2")
            && reason.contains(&format!(
                "{:#018x}",
                <calculator::Client as capnp::traits::HasTypeId>::TYPE_ID
            )),
        "{reason}"
    );
    drop((wrong, echo));
    capnp_actix::debug::assert_all_released().await;
}
