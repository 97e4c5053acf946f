//! `echo connect --reconnect` keeps pinging across a server restart: the
//! server (TLS, with a key file and a store, over a Unix socket) is
//! killed and started again with the same key file and store, and the
//! client, still running, reports the loss, reconnects and prints
//! `Got reply` again. The `web` front end with `--backend URI` answers
//! again once its restarted backend is back.

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

/// `GET path` on `addr` (HTTP/1.1, closing): the status and the body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to web");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("an HTTP response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

#[test]
fn web_with_a_backend_answers_again_once_its_restarted_backend_is_back() {
    let dir = TempDir::new("web-backend");
    let backend = echo_server(&dir);
    let web = Server::start(
        "web",
        &["--bind", "127.0.0.1:0", "--backend", &backend.uri],
        "listening on http://",
    );
    let addr = web.uri.split('/').next().unwrap().to_string();
    assert_eq!(http_get(&addr, "/ping/before"), (200, "echo:before".into()));

    drop(backend); // killed
    let (status, body) = http_get(&addr, "/ping/down");
    assert_eq!(status, 502, "{body}");
    let _restarted = echo_server(&dir);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (status, body) = http_get(&addr, "/ping/after");
        if status == 200 {
            assert_eq!(body, "echo:after");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {status} {body:?} 15 s after the backend restarted"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
