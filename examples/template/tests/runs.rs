//! Runs the template's program and checks what it prints.

use std::process::Command;

#[test]
fn serves_the_counter_and_calls_it_over_tcp() {
    let output = Command::new(env!("CARGO_BIN_EXE_capnp-actix-template"))
        .env_remove("RUST_LOG")
        .output()
        .expect("running the template");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let (banner, calls) = lines.split_first().expect("some output");
    assert!(
        banner.starts_with("serving at capnp://insecure@127.0.0.1:")
            && banner.ends_with("/Y291bnRlcg"),
        "{stdout}"
    );
    assert_eq!(
        calls,
        [
            "add(5) -> 5",
            "add(3) on a local counter -> 3",
            "addFrom(the local counter) -> 8",
        ],
        "{stdout}{stderr}"
    );
}
