//! TLS between vats: each side shows a self-signed certificate made from
//! its secret key, and a vat is known by the fingerprint of its public key
//! (SHA-256 of the DER `SubjectPublicKeyInfo`), not by a CA or a host name.
//!
//! - The client accepts the server only if the server's key has the
//!   fingerprint its sturdy URI names (the handshake's signature is still
//!   checked, which proves the server holds the key).
//! - The server asks every client for a certificate, accepts any key, and
//!   records the client's fingerprint as the peer's identity.
//!
//! One crypto provider (ring) is chosen explicitly for every config, so
//! that another provider compiled into the program cannot make the
//! builders panic.

use std::io;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::identity::{Fingerprint, SecretKey};

/// The TLS stream of a connection we opened.
pub type ClientStream<S> = tokio_rustls::client::TlsStream<S>;
/// The TLS stream of a connection we accepted.
pub type ServerStream<S> = tokio_rustls::server::TlsStream<S>;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Signature checks over the handshake, shared by both verifiers.
#[derive(Debug)]
struct Signatures(WebPkiSupportedAlgorithms);

impl Signatures {
    fn new(provider: &CryptoProvider) -> Self {
        Signatures(provider.signature_verification_algorithms)
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Accepts exactly the server whose key has the expected fingerprint.
#[derive(Debug)]
struct ExpectServer {
    expected: Fingerprint,
    signatures: Signatures,
}

impl ServerCertVerifier for ExpectServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = Fingerprint::of_certificate_der(end_entity)
            .map_err(|e| rustls::Error::General(format!("server certificate: {e}")))?;
        if got == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's public key has fingerprint sha-256:{got}, \
                 but the sturdy ref expects sha-256:{}",
                self.expected
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}

/// Requires a client certificate and accepts any key: the client's
/// fingerprint is its identity, and what it may do is decided by the
/// capabilities it holds, not by who it is.
#[derive(Debug)]
struct AnyClientKey {
    signatures: Signatures,
}

impl ClientCertVerifier for AnyClientKey {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Fingerprint::of_certificate_der(end_entity)
            .map_err(|e| rustls::Error::General(format!("client certificate: {e}")))?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}

/// The server side of a vat's TLS: built once per vat.
#[derive(Clone)]
pub struct Acceptor {
    inner: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Acceptor")
    }
}

impl Acceptor {
    /// Serves TLS with `key`'s self-signed certificate.
    pub fn new(key: &SecretKey) -> io::Result<Self> {
        let provider = provider();
        let (cert, private) = key.certified_key();
        let config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?
            .with_client_cert_verifier(Arc::new(AnyClientKey {
                signatures: Signatures::new(&provider),
            }))
            .with_single_cert(vec![cert], private)
            .map_err(tls_error)?;
        Ok(Acceptor {
            inner: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Runs the server side of the handshake; gives the stream and the
    /// client's fingerprint.
    pub async fn accept<S>(&self, stream: S) -> io::Result<(ServerStream<S>, Fingerprint)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let tls = self.inner.accept(stream).await?;
        let peer = peer_fingerprint(tls.get_ref().1.peer_certificates())?;
        Ok((tls, peer))
    }
}

fn peer_fingerprint(certs: Option<&[CertificateDer<'static>]>) -> io::Result<Fingerprint> {
    let cert = certs
        .and_then(|c| c.first())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "peer sent no certificate"))?;
    Fingerprint::of_certificate_der(cert)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// Runs the client side of the handshake with `key`'s certificate,
/// accepting only a server whose key has the fingerprint `expected`.
///
/// A server with another key fails with an [`io::ErrorKind::PermissionDenied`]
/// error that names both fingerprints.
pub async fn connect<S>(
    stream: S,
    key: &SecretKey,
    expected: Fingerprint,
) -> io::Result<ClientStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let provider = provider();
    let (cert, private) = key.certified_key();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ExpectServer {
            expected,
            signatures: Signatures::new(&provider),
        }))
        .with_client_auth_cert(vec![cert], private)
        .map_err(tls_error)?;
    // No host name is checked; the name only fills the SNI field.
    let name = ServerName::try_from("capnp")
        .map_err(|e| tls_error(rustls::Error::General(e.to_string())))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(
            |e| match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                Some(rustls::Error::General(reason)) => io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("TLS authentication failed: {reason}"),
                ),
                _ => e,
            },
        )
}
