//! `echo connect --reconnect` keeps pinging across a server restart: the
//! server (TLS, with a key file and a store, over a Unix socket) is
//! killed and started again with the same key file and store, and the
//! client, still running, reports the loss, reconnects and prints
//! `Got reply` again.

mod examples_support;

use examples_support::{Server, TempDir};

/// `echo serve` with a fixed key file and store on `socket`.
fn echo_server(dir: &TempDir) -> Server {
    let socket = format!("unix:{}", dir.path().join("echo.sock").display());
    let key = dir.path().join("key.pem").display().to_string();
    let store = dir.path().join("store").display().to_string();
    Server::start(
        "echo",
        &[
            "serve",
            "--capnp-listen-address",
            &socket,
            "--capnp-secret-key-file",
            &key,
            "--store-dir",
            &store,
        ],
        "echo service running at: ",
    )
}

#[test]
fn echo_connect_reconnect_pings_again_once_a_restarted_server_is_back() {
    let dir = TempDir::new("reconnect");
    let server = echo_server(&dir);
    let uri = server.uri.clone();
    // The client prints a banner of its own: its first reply.
    let mut client = Server::start("echo", &["connect", "--reconnect", &uri], "Got reply ");
    assert!(client.uri.starts_with("\"echo:ping "), "{}", client.uri);
    assert_eq!(client.seen[0], "Connection: connected", "{:?}", client.seen);

    drop(server); // killed: no goodbye to the client
    client.expect(
        |l| l.starts_with("Connection: reconnecting (attempt 1): "),
        "the client noticing the loss",
    );
    let restarted = echo_server(&dir);
    assert_eq!(restarted.uri, uri, "same key file: same URI");
    client.expect_line("Connection: connected");
    let reply = client.expect(|l| l.starts_with("Got reply "), "a reply after the restart");
    assert!(reply.starts_with("Got reply \"echo:ping "), "{reply}");
    // And it goes on.
    client.expect(|l| l.starts_with("Got reply "), "another reply");
}
