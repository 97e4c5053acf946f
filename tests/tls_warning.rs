//! SCENARIOS 51, the server's side: a client that expects another key
//! gets nothing from the server, and the server logs a warning naming the
//! failed handshake. In a test binary of its own, because the log
//! subscriber is process-wide.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use capnp_actix::restorer::Table;
use capnp_actix::vat::Vat;
use capnp_actix::{Address, SecretKey, VatAuth, VatConfig};

/// Collects the formatted log lines.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_wrong_fingerprint_is_a_warning_on_the_server() {
    let lines = Lines::default();
    let writer = lines.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    actix::System::new().block_on(async {
        let config = VatConfig::new()
            .with_listen_address(Address::parse("tcp:127.0.0.1:0").unwrap())
            .with_secret_key(SecretKey::ephemeral());
        let server = Vat::start_with(&config, |uris| Table::new(move |id| uris.sturdy_uri(id)))
            .await
            .unwrap();
        let mut wrong = server.sturdy_uri(b"main").unwrap();
        wrong.auth = VatAuth::Sha256(SecretKey::ephemeral().fingerprint().0);
        let client = Vat::client(&VatConfig::new()).await.unwrap();
        let e = client.import(&wrong).await.unwrap_err();
        assert!(e.to_string().contains("TLS authentication failed"), "{e}");
        // The server notices the aborted handshake.
        let mut text = String::new();
        for _ in 0..100 {
            text = String::from_utf8_lossy(&lines.0.lock().unwrap()).into_owned();
            if text.contains("TLS handshake with a client failed") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(text.contains("WARN"), "{text}");
        assert!(
            text.contains("TLS handshake with a client failed"),
            "{text}"
        );
        // The client logged its own side too, naming the fingerprints.
        assert!(text.contains("connect failed"), "{text}");
        assert!(server.connections().await.is_empty());
        client.stop();
        server.stop();
    });
}
