//! A vat's identity: its secret key, the self-signed certificate it shows
//! in TLS, the fingerprint that peers check, and service IDs derived from
//! the key.
//!
//! A vat is identified by the SHA-256 of its public key's DER
//! `SubjectPublicKeyInfo` (not of the certificate, which any holder of the
//! key could remake). Certificates carry no names and never expire, so
//! that the fingerprint is all a client checks.
//!
//! # Which key a new key file gets
//!
//! The reference vats (OCaml `capnp-rpc-unix`) create RSA-2048 keys. We
//! create **ECDSA P-256** keys (PEM PKCS#8, `-----BEGIN PRIVATE KEY-----`)
//! instead, because generating RSA-2048 takes seconds to tens of seconds in
//! an unoptimised (debug) build of a program that depends on this crate,
//! while P-256 takes well under a millisecond in any build. The reference
//! accepts such keys both ways: since capnp-rpc 1.1 it uses ocaml-x509
//! 0.13 or later, whose `Private_key.decode_pem` reads PKCS#8 EC keys (so a
//! P-256 key file works as its `--capnp-secret-key-file`), and ocaml-tls
//! 0.13 or later, which negotiates ECDSA certificates and checks a peer by
//! the SHA-256 of its public key whatever the key type. OpenSSL-based
//! peers accept them too. Older reference vats (capnp-rpc before 1.1)
//! spoke RSA only; for those, make an RSA key file with
//! [`SecretKey::load_or_create_with`] and [`SecretKey::generate_rsa`].
//!
//! Existing key files of every kind keep loading as before (RSA in PKCS#8
//! or PKCS#1, ECDSA P-256/P-384 in PKCS#8 or SEC1, Ed25519), with the same
//! fingerprints, so changing the default moves no existing vat.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use p256::pkcs8::{AssociatedOid, EncodePrivateKey, ObjectIdentifier, PrivateKeyInfo};
use rand::rngs::OsRng;
use rand::RngCore;
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use crate::uri::VatAuth;

/// The SHA-256 of a DER `SubjectPublicKeyInfo`: what a sturdy URI's
/// `sha-256:` part names and what a TLS client checks.
///
/// It prints (and parses) as 43 characters of base64url without padding,
/// the same text as
/// `openssl pkey -in key.pem -pubout -outform DER | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '='`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a public key given as DER `SubjectPublicKeyInfo`.
    pub fn of_spki_der(spki: &[u8]) -> Self {
        Fingerprint(Sha256::digest(spki).into())
    }

    /// The fingerprint of the public key inside a DER X.509 certificate
    /// (the hash covers the certificate's `SubjectPublicKeyInfo` exactly as
    /// encoded there).
    pub fn of_certificate_der(cert: &[u8]) -> Result<Self, KeyError> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert)
            .map_err(|e| KeyError::BadCertificate(e.to_string()))?;
        Ok(Self::of_spki_der(parsed.tbs_certificate.subject_pki.raw))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl FromStr for Fingerprint {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        URL_SAFE_NO_PAD
            .decode(s)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .map(Fingerprint)
            .ok_or_else(|| KeyError::BadFingerprint(s.into()))
    }
}

impl From<Fingerprint> for VatAuth {
    /// TLS authentication by this fingerprint.
    fn from(fp: Fingerprint) -> Self {
        VatAuth::Sha256(fp.0)
    }
}

/// Why a key, key file, certificate or fingerprint could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file exists but could not be read (permissions, a
    /// directory, an I/O error).
    #[error("cannot read secret key file {}: {source}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// A new key file could not be created or written (missing directory,
    /// permissions, or another process created it at the same moment).
    #[error("cannot create secret key file {}: {source}", path.display())]
    Write {
        /// The key file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The key file was read but its contents are not a usable key.
    #[error("secret key file {}: {source}", path.display())]
    InFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with its contents.
        source: Box<KeyError>,
    },
    /// No PEM block at all (empty input, not PEM, or only blocks of kinds
    /// nobody recognises).
    #[error(
        "no PEM private key found (expected -----BEGIN PRIVATE KEY----- (PKCS#8), \
         -----BEGIN RSA PRIVATE KEY----- (PKCS#1) or -----BEGIN EC PRIVATE KEY----- (SEC1))"
    )]
    NoPem,
    /// A PEM block that is cut short or whose base64 is broken.
    #[error("malformed PEM: {0}")]
    BadPem(String),
    /// PEM blocks, but none holds a private key (a certificate, a public
    /// key, ...).
    #[error("the PEM holds {0} but no private key")]
    NotAKey(String),
    /// A private key of a kind we cannot sign with.
    #[error("unsupported key type: {0}")]
    Unsupported(String),
    /// A private key block whose contents do not decode as the key it
    /// claims to be.
    #[error("bad key data: {0}")]
    BadKey(String),
    /// Key generation failed (the OS random number generator failed).
    #[error("cannot generate a key: {0}")]
    Generate(String),
    /// The self-signed certificate could not be made.
    #[error("cannot make the self-signed certificate: {0}")]
    Certificate(String),
    /// A certificate given to [`Fingerprint::of_certificate_der`] does not
    /// parse.
    #[error("cannot parse certificate: {0}")]
    BadCertificate(String),
    /// Text that is not a fingerprint.
    #[error(
        "{0:?} is not a key fingerprint (expected 43 characters of base64url: \
         a SHA-256 without padding)"
    )]
    BadFingerprint(String),
}

impl KeyError {
    fn in_file(self, path: &Path) -> Self {
        KeyError::InFile {
            path: path.to_path_buf(),
            source: Box::new(self),
        }
    }
}

/// A vat's secret key, with its fingerprint and self-signed certificate.
///
/// Cloning is cheap (the key is shared). `Debug` shows the key type and
/// fingerprint, never key material.
#[derive(Clone)]
pub struct SecretKey(Arc<KeyInner>);

struct KeyInner {
    /// The PEM as given (the file's exact bytes): derived IDs hash it.
    pem: Vec<u8>,
    /// The key as PKCS#8 DER, whatever format the PEM used.
    pkcs8: Vec<u8>,
    algorithm: &'static str,
    fingerprint: Fingerprint,
    certificate: CertificateDer<'static>,
}

/// The private key formats a PEM block may hold.
enum KeyBlock {
    Pkcs8(Vec<u8>),
    Pkcs1(Vec<u8>),
    Sec1(Vec<u8>),
}

const ED25519_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const ED448_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.113");
const EC_PUBLIC_KEY_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

impl SecretKey {
    /// Generates an RSA-2048 key, the kind the reference vats create, held
    /// as PEM PKCS#8 (`-----BEGIN PRIVATE KEY-----`).
    ///
    /// Slow unoptimised: seconds, sometimes tens of seconds, in a debug
    /// build unless the `rsa` and `num-bigint-dig` packages are compiled
    /// with `opt-level = 3` (a `[profile.dev.package.rsa]` section in the
    /// program's own `Cargo.toml`). [`SecretKey::generate`] is the fast
    /// default.
    pub fn generate_rsa() -> Result<Self, KeyError> {
        use rsa::pkcs8::EncodePrivateKey as _;
        let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048)
            .map_err(|e| KeyError::Generate(format!("RSA-2048: {e}")))?;
        let pem = key
            .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .map_err(|e| KeyError::Generate(format!("RSA-2048 PEM encoding: {e}")))?;
        Self::from_pem(pem.as_bytes())
    }

    /// Generates an ECDSA P-256 key, held as PEM PKCS#8
    /// (`-----BEGIN PRIVATE KEY-----`): the kind [`SecretKey::load_or_create`]
    /// stores in a new key file.
    ///
    /// It takes well under a millisecond even unoptimised, and the
    /// reference vats (capnp-rpc 1.1 and later) and OpenSSL-based peers
    /// accept it (see the module docs).
    pub fn generate() -> Result<Self, KeyError> {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| KeyError::Generate(format!("ECDSA P-256: {e}")))?;
        let pem = key_pair.serialize_pem().into_bytes();
        Self::from_key_pair(pem, &key_pair, "ECDSA P-256")
    }

    /// A fresh key for a vat that needs no lasting identity (tests,
    /// clients): a new [`SecretKey::generate`] key, kept nowhere.
    ///
    /// # Panics
    ///
    /// If the operating system's random number generator fails, as
    /// [`rand::rngs::OsRng`] does; [`SecretKey::try_ephemeral`] reports
    /// that as an error instead.
    pub fn ephemeral() -> Self {
        match Self::try_ephemeral() {
            Ok(key) => key,
            Err(e) => panic!("cannot make an ephemeral key: {e}"),
        }
    }

    /// [`SecretKey::ephemeral`], returning an error instead of panicking if
    /// the random number generator fails.
    pub fn try_ephemeral() -> Result<Self, KeyError> {
        Self::generate()
    }

    /// Loads a key from PEM: PKCS#8 (`BEGIN PRIVATE KEY`: RSA, ECDSA
    /// P-256 or P-384, Ed25519), PKCS#1 (`BEGIN RSA PRIVATE KEY`) or SEC1
    /// (`BEGIN EC PRIVATE KEY`: P-256 or P-384). The first private key
    /// block is used; other blocks (a certificate, say) are ignored.
    /// Encrypted keys are not supported.
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let block = first_private_key(pem)?;
        let (pkcs8, algorithm) = match block {
            KeyBlock::Pkcs8(der) => {
                let algorithm = pkcs8_algorithm(&der)?;
                (der, algorithm)
            }
            KeyBlock::Pkcs1(der) => (rsa_pkcs1_to_pkcs8(&der)?, "RSA"),
            KeyBlock::Sec1(der) => sec1_to_pkcs8(&der)?,
        };
        let key_pair = rcgen::KeyPair::try_from(&PrivatePkcs8KeyDer::from(pkcs8.as_slice()))
            .map_err(|e| {
                KeyError::BadKey(format!(
                    "the {algorithm} key was rejected by the signing library (ring): {e}"
                ))
            })?;
        Self::from_key_pair(pem.to_vec(), &key_pair, algorithm)
    }

    /// Loads the key in `path`, or, if there is no such file, generates an
    /// ECDSA P-256 key ([`SecretKey::generate`]) and stores it there as PEM
    /// PKCS#8, readable by the owner only (mode 0600). A key file of any
    /// kind [`SecretKey::from_pem`] reads (an RSA key made by a reference
    /// vat, say) is loaded as it is.
    ///
    /// The file is created exclusively: if another process creates it
    /// between our look and our write, this fails rather than overwrite a
    /// key that may already be in use. Every error names the path.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        Self::load_or_create_with(path, Self::generate)
    }

    /// [`SecretKey::load_or_create`], generating a missing key with
    /// `generate`: `SecretKey::load_or_create_with(path,
    /// SecretKey::generate_rsa)` makes the RSA-2048 key files that vats of
    /// capnp-rpc before 1.1 need.
    pub fn load_or_create_with(
        path: &Path,
        generate: impl FnOnce() -> Result<Self, KeyError>,
    ) -> Result<Self, KeyError> {
        match fs::read(path) {
            Ok(pem) => Self::from_pem(&pem).map_err(|e| e.in_file(path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let key = generate()?;
                write_new_key_file(path, key.pem())?;
                // The file now holds exactly `key.pem()`, so the key is
                // what reading it back would give.
                Ok(key)
            }
            Err(source) => Err(KeyError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The PEM text exactly as loaded (a key file's bytes, unchanged):
    /// derived service IDs depend on these bytes.
    pub fn pem(&self) -> &[u8] {
        &self.0.pem
    }

    /// The SHA-256 fingerprint of the public key.
    pub fn fingerprint(&self) -> Fingerprint {
        self.0.fingerprint
    }

    /// A service ID derived from this key and a name:
    /// HMAC-SHA256 with key SHA-256(the PEM's bytes) over the name. The
    /// same key file and name always give the same 32 bytes, so a vat can
    /// hand out a stable sturdy ref without storing anything.
    pub fn derived_id(&self, name: &[u8]) -> Vec<u8> {
        let secret: [u8; 32] = Sha256::digest(self.pem()).into();
        // HMAC pads a key shorter than the hash's block size with zeros
        // (RFC 2104, section 2); padding it here gives the same MAC and
        // lets the infallible constructor be used.
        let mut key = hmac::digest::Key::<Hmac<Sha256>>::default();
        for (k, s) in key.iter_mut().zip(secret) {
            *k = s;
        }
        let mut mac = <Hmac<Sha256> as KeyInit>::new(&key);
        mac.update(name);
        mac.finalize().into_bytes().to_vec()
    }

    /// The self-signed certificate (subject `CN=capnp`, valid from
    /// 1970-01-01 to 9999-12-31) and the private key, ready for rustls.
    /// The certificate is made once, when the key is loaded.
    pub fn certified_key(&self) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        (
            self.0.certificate.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.0.pkcs8.clone())),
        )
    }

    fn from_key_pair(
        pem: Vec<u8>,
        key_pair: &rcgen::KeyPair,
        algorithm: &'static str,
    ) -> Result<Self, KeyError> {
        Ok(SecretKey(Arc::new(KeyInner {
            pem,
            pkcs8: key_pair.serialize_der(),
            algorithm,
            fingerprint: Fingerprint::of_spki_der(&key_pair.public_key_der()),
            certificate: self_signed_certificate(key_pair)?,
        })))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("algorithm", &self.0.algorithm)
            .field("fingerprint", &format_args!("{}", self.0.fingerprint))
            .finish_non_exhaustive()
    }
}

/// A random service ID for a new sturdy ref: 20 bytes from the OS's
/// cryptographically secure generator. It is a bearer secret: whoever
/// knows it can use the service.
///
/// # Panics
///
/// If the operating system's random number generator fails, as
/// [`rand::rngs::OsRng`] does.
pub fn generated_service_id() -> Vec<u8> {
    let mut id = vec![0u8; 20];
    OsRng.fill_bytes(&mut id);
    id
}

/// The first private key block in `pem`; a clear error if there is none.
fn first_private_key(pem: &[u8]) -> Result<KeyBlock, KeyError> {
    let mut others = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        let (kind, der) = section.map_err(pem_error)?;
        match kind {
            SectionKind::PrivateKey => return Ok(KeyBlock::Pkcs8(der)),
            SectionKind::RsaPrivateKey => return Ok(KeyBlock::Pkcs1(der)),
            SectionKind::EcPrivateKey => return Ok(KeyBlock::Sec1(der)),
            other => others.push(section_name(other)),
        }
    }
    if contains(pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(KeyError::Unsupported(
            "encrypted private key (decrypt it with `openssl pkey`)".into(),
        ));
    }
    if others.is_empty() {
        return Err(KeyError::NoPem);
    }
    Err(KeyError::NotAKey(others.join(", ")))
}

/// The PEM parser's complaint, with its byte strings shown as text.
fn pem_error(e: rustls_pki_types::pem::Error) -> KeyError {
    use rustls_pki_types::pem::Error;
    KeyError::BadPem(match e {
        Error::MissingSectionEnd { end_marker } => format!(
            "no -----END {}----- line",
            String::from_utf8_lossy(&end_marker)
        ),
        Error::IllegalSectionStart { line } => {
            format!("bad BEGIN line {:?}", String::from_utf8_lossy(&line))
        }
        Error::Base64Decode(e) => format!("bad base64: {e}"),
        other => other.to_string(),
    })
}

fn section_name(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::Certificate => "a CERTIFICATE",
        SectionKind::PublicKey => "a PUBLIC KEY",
        SectionKind::Crl => "an X509 CRL",
        SectionKind::Csr => "a CERTIFICATE REQUEST",
        _ => "a non-key block",
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Which algorithm a PKCS#8 key is for, refusing those we cannot sign with.
fn pkcs8_algorithm(der: &[u8]) -> Result<&'static str, KeyError> {
    let info = PrivateKeyInfo::try_from(der)
        .map_err(|e| KeyError::BadKey(format!("not a PKCS#8 private key: {e}")))?;
    let oid = info.algorithm.oid;
    if oid == rsa::pkcs1::ALGORITHM_OID {
        let key = rsa::pkcs1::RsaPrivateKey::try_from(info.private_key)
            .map_err(|e| KeyError::BadKey(format!("not an RSA private key: {e}")))?;
        check_rsa_size(&key)?;
        Ok("RSA")
    } else if oid == EC_PUBLIC_KEY_OID {
        match info.algorithm.parameters_oid() {
            Ok(curve) if curve == p256::NistP256::OID => Ok("ECDSA P-256"),
            Ok(curve) if curve == p384::NistP384::OID => Ok("ECDSA P-384"),
            Ok(curve) => Err(KeyError::Unsupported(format!(
                "EC key on curve {curve} (only P-256 and P-384 are supported)"
            ))),
            Err(e) => Err(KeyError::BadKey(format!(
                "EC key without a named curve: {e}"
            ))),
        }
    } else if oid == ED25519_OID {
        Ok("Ed25519")
    } else if oid == ED448_OID {
        Err(KeyError::Unsupported(
            "Ed448 (RSA, ECDSA P-256/P-384 and Ed25519 are supported)".into(),
        ))
    } else {
        Err(KeyError::Unsupported(format!(
            "key algorithm {oid} (RSA, ECDSA P-256/P-384 and Ed25519 are supported)"
        )))
    }
}

/// ring signs only with RSA keys of 2048 bits or more; say so plainly.
fn check_rsa_size(key: &rsa::pkcs1::RsaPrivateKey<'_>) -> Result<(), KeyError> {
    let bits = key.modulus.as_bytes().len() * 8;
    if bits < 2048 {
        return Err(KeyError::Unsupported(format!(
            "RSA key of {bits} bits (at least 2048 are needed)"
        )));
    }
    Ok(())
}

/// PKCS#1 `RSA PRIVATE KEY` to PKCS#8, which is what rcgen and ring read.
fn rsa_pkcs1_to_pkcs8(der: &[u8]) -> Result<Vec<u8>, KeyError> {
    use rsa::pkcs1::DecodeRsaPrivateKey as _;
    use rsa::pkcs8::EncodePrivateKey as _;
    let parsed = rsa::pkcs1::RsaPrivateKey::try_from(der)
        .map_err(|e| KeyError::BadKey(format!("not a PKCS#1 RSA private key: {e}")))?;
    check_rsa_size(&parsed)?;
    let key = rsa::RsaPrivateKey::from_pkcs1_der(der)
        .map_err(|e| KeyError::BadKey(format!("not a valid RSA private key: {e}")))?;
    let doc = key
        .to_pkcs8_der()
        .map_err(|e| KeyError::BadKey(format!("cannot re-encode the RSA key: {e}")))?;
    Ok(doc.as_bytes().to_vec())
}

/// SEC1 `EC PRIVATE KEY` (P-256 or P-384) to PKCS#8.
fn sec1_to_pkcs8(der: &[u8]) -> Result<(Vec<u8>, &'static str), KeyError> {
    let reencode = |e: p256::pkcs8::Error| {
        KeyError::BadKey(format!("cannot re-encode the EC key as PKCS#8: {e}"))
    };
    if let Ok(key) = p256::SecretKey::from_sec1_der(der) {
        let doc = key.to_pkcs8_der().map_err(reencode)?;
        return Ok((doc.as_bytes().to_vec(), "ECDSA P-256"));
    }
    if let Ok(key) = p384::SecretKey::from_sec1_der(der) {
        let doc = key.to_pkcs8_der().map_err(reencode)?;
        return Ok((doc.as_bytes().to_vec(), "ECDSA P-384"));
    }
    Err(KeyError::BadKey(
        "the EC PRIVATE KEY is not a valid P-256 or P-384 key (other curves are not supported)"
            .into(),
    ))
}

/// The certificate the reference vats make: self-signed, subject
/// `CN=capnp`, valid from the Unix epoch to the end of 9999, no names.
fn self_signed_certificate(key_pair: &rcgen::KeyPair) -> Result<CertificateDer<'static>, KeyError> {
    let mut params = rcgen::CertificateParams::default();
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, "capnp");
    params.distinguished_name = name;
    params.not_before = time::OffsetDateTime::UNIX_EPOCH;
    params.not_after = time::Date::from_calendar_date(9999, time::Month::December, 31)
        .map_err(|e| KeyError::Certificate(e.to_string()))?
        .midnight()
        .assume_utc();
    let cert = params
        .self_signed(key_pair)
        .map_err(|e| KeyError::Certificate(e.to_string()))?;
    Ok(cert.der().clone())
}

/// Creates `path` (it must not exist) with mode 0600 and writes `pem`.
fn write_new_key_file(path: &Path, pem: &[u8]) -> Result<(), KeyError> {
    let failed = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(failed)?;
    if let Err(e) = file.write_all(pem).and_then(|()| file.sync_all()) {
        // Leave no half-written key behind to fail the next start.
        drop(file);
        let _ = fs::remove_file(path);
        return Err(failed(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Keys made with `openssl genpkey` (and `openssl rsa -traditional`,
    // `openssl ec` for the PKCS#1 and SEC1 forms). Each `*_FP` is what
    // OpenSSL prints for it:
    // `openssl pkey -in key.pem -pubout -outform DER | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '='`.
    const RSA_PKCS8: &str = "\
        -----BEGIN PRIVATE KEY-----\n\
        MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDAAzDBr66RP2t9\n\
        Im9hZP3w8QBDBLjwDrAJE0g1yJz+NP8ZYz8hfbYcLez6KsZrpORDpwIoiN/Rn1oE\n\
        ZmyXT8iZXoV4NywhKSZ1UQKoO6ZU3AbMatLSb+qM7N14+39YoNr3GceGhFWLw53e\n\
        AIpKAL+6ucPbtl+YLqHCTRea6MqLhOO3892C9q8RR9K1t2Db1m9eOVSiqWx+xyss\n\
        rXi+JQ/gZUJo3VMXBOLXkTqnrPAvq/3Ouf5rC7uzLT9lvnCUr8NWbssV8S7r2qIz\n\
        h78XcBcatKJT+rIOf/KqCaZ9LEfWtwXk8raLzxB0yjB+tHUIZhSaZTebfJ+qLEQH\n\
        8hoFeWCzAgMBAAECggEAAdEF6Q8sa5tZ/PkSbK1z6Y+eHQQya7L3314bVMbtFUqT\n\
        Dz5tHnf9/Q5CK6uz7NjGgA1Ya+G/nFARnfEKHfRXRXwrbxO2iynEf1+g0s6dqDfc\n\
        qJpqHCuK4IJtJfPbJI+BAs1vocomtQfIuozuwfx30+BmBfIXvWzTgu8PxhtlryQy\n\
        f65gK2oQiISWzSGrYJyOv12oYJaWaOf3IOx7WSuNmB3/pc/HUXLMkh1AMky9ftld\n\
        2JXVC92msgmobwL5+jOfXIzOo39wskXhgdf9tNztT97AK5oDsCd4ntE6cyByQ1bw\n\
        rcMlNgVspUYy+7vTl8kA18xZU/A88JNurfmUfDcA4QKBgQDqn1MJ5ZrUI4KvQGAa\n\
        nd8uUn1J/z42JWC7X7/rvhkOCN9qcYSXB36r1pFExu9hBcb78dqG44+bAKtyzjst\n\
        jGzOH3CaQcBTsuAp3aA4m2lOQeqKqtM1EBuBH+tYdIRThcy8ePhLLHwE/YXlakTi\n\
        rXxKr7RhtadZsPolEQG5BNZELQKBgQDRgfhsecCgDlbC9FIcAojcVDz5MeKKymF3\n\
        sQLozvO+Qwu4qfUr3RoGuuFG/hUt41hVSgMg8bnU2f/z9D8jKkjrO+DL9F1epOuy\n\
        QXdmwE6OthRl94eTOIvDLN1eZ0D7AsrmCPQ8pUFtcsn3s3tpOaKCkQLzghb5qcPF\n\
        MkozqvbkXwKBgHFdPlA/4smxxslK/6Sct2O4c9U3QSYEdXLT1vXfSlffraPO6dPX\n\
        yTraWCK1RKDKm9TMjVwzxAWPE0hLoYhmm4QU6OF/95/5hBp2fZ4caYtoih0qYRb4\n\
        i3GerKZ21iFNOxmuEbqw6dO3c+Tfrh0g2jd0ImI71Xqe6p7SUtTFI4qZAoGAMWjV\n\
        jb+pDhZTn+a+9pwiatPzDVIWe2T/V5sHdKBaG6T0PrjWeWHLoYqxVmzV0dysGHE8\n\
        C6j2ipxfIMmZmlF+oPueKHuZCZkbfQ6zeiggXsfSR7n431+WlpEeJAV17bza3SV/\n\
        dE4FACryNti9YjOVf/VzHLqxcG/5G6igl07aq0ECgYBq+QlNYRVgKOwRYaep86sy\n\
        ZVvYFS3MpOAwEUR1GQnJlwNEElIAILZp1tkfZyuFXqJBOjJm60n+hzJOBaLdmjZ7\n\
        lwTQCiBEoEkgt4wGh76Vvffnz/aVWrr7H7CXofR+KsIE3nGQ6jWIspMxtGGzAWke\n\
        AvK10nhe1S2sL9+g9GEEEQ==\n\
        -----END PRIVATE KEY-----\n\
    ";
    const RSA_PKCS1: &str = "\
        -----BEGIN RSA PRIVATE KEY-----\n\
        MIIEowIBAAKCAQEAs//1OyxJFPtc2gKAZlj+MO4KWMEMIPBjsWhkbyp+GtCwSLvA\n\
        myFkWgbcHr2B1y+RcSnoWDoVynGcXXpzSqMgkhO3BFb2paGgycaL+c+TwP7d0uWk\n\
        N6dUVKpDL02nVCmrdD6Pef8LZ+o6Vv9GO7377Bjank7rfyyHrjpBrcqxDD/bM2/v\n\
        xAad4iUDqqrAlWysP0gIOFT1ztUGXoHEKSNnvDMdWSFua5CK1er6ZPgb7mCZpWPw\n\
        urGv6n5RWeLYUQY6gLCZogQW7FVIzteu1KWIBMaJzYmAZPE4hZAH92etaiYJD6B1\n\
        EGK4QY9Rj4Qj/XxhiqUg1ji1NGhx4ChrOpq+iQIDAQABAoIBAAQakaaT4mX/kG+J\n\
        /2UV91RPQQjNUe+i+2riiej864YZ/ELplkETLaddy6v0acmUVI5jbwrVPC+dj9E+\n\
        cZ13LaQW80++hH4POswO4kcY7pyc/Zq0JfPSNU/ULUGeqsd2RxSYjoswqju9cS9l\n\
        lN4s0oRgpq9VoPSJI94a3D9677bAk2fkbyn82pgTPdsJpX2+LQu1UXQwwE9putNL\n\
        /8FeUdtSxW3hoIr+bV5LRnIBaoug4lJfdIJNcYKKbviMQAYqvZZhLYiy3/jowtf9\n\
        d7M8lVDf0XYFlqbiWzlRq52jPXibD2am94aXcy9+U/WMcoY7tb2YcgvOPe0LFgxl\n\
        m2nwKOcCgYEA9cD7cf/lq2QmZVOM7L3NtCedGvJdNwXa3EHIrB0ICDMaCmbCzwsa\n\
        w0Ltkgwb0+QLxSznH0BZz615p/bJEW1Zny+UQYH4/DGFtGmHA5j1eRkcwyvcr84h\n\
        W3hPTLt1VXo2Sila7pCQGV8MWgguSh663SdxyZU3fHqJFHn/bQUG9P8CgYEAu4Eo\n\
        88yimo2r0ccq/JTUYCPTu8GxLzytXdJWZa8PbU2m7Ej4AdC+0dD1kilPjRvDJfsq\n\
        zG/B4KQOXliyereuly8rflMzrldtIlSkeaeFllaF/tstZiOPgmpGte1bqoSBYKiV\n\
        9trrPr+HX2ConvUwX8FuK2DSx3u0hBDshC8VJHcCgYBuBE3MtC2CM9yIggXVugbL\n\
        vuwzMwsN5d4buot2mayN1yqyO1y8yZDalyy5tBgFHNM0Gy0ArZNHSLbsvas31QdJ\n\
        H0i0ptXrONRNduyNbL1/0AEzUoCCZ7pBM7P0evtFH+gL/UWLBUatRQLHj2ABqI4p\n\
        EU58WwOzAzw44YC6soRxywKBgAKwe5HjoYFt/sTngmpVCCbI3MSYpp3y1Nm/ppWW\n\
        yTXcI0TIVyZPhC0mPh92kDmJ6GanD5oXEETUlZAs3YJ9F/f7KTiKoPcjMeGILUPB\n\
        b10UqJ9bLW+Fmw1X0OPTH7l2ZRSp1lzQDwe7X4myrTh6c9MrxxTAMsXBtHkgdQQA\n\
        WOFJAoGBAKo3XBtD8bXNTmRuuaZqtkDeLHhJV/8eENt1rxe0a/ACCqCHygv5pwng\n\
        Jnyr/AVS7G4tjONnB6BKrxunn8KvklvvQqVshT/ksaQi2AOUGZgEb2bMzh7QxIZC\n\
        vAViZ4mPPkg8uzzrGVDHKRav3J8iLqX9h4CMMw6jz6+UYp+w8V+b\n\
        -----END RSA PRIVATE KEY-----\n\
    ";
    const EC_P256_SEC1: &str = "\
        -----BEGIN EC PRIVATE KEY-----\n\
        MHcCAQEEIGtFL9s2uHRUIuUCl0A4dmiZ8YFqwICT/AOOKi2IlcAboAoGCCqGSM49\n\
        AwEHoUQDQgAEOTpqveZ0kOBFziwdG+/mjOKBn7VAJTLxzcNMGFLcAiHVqgEI/ubj\n\
        p59xFqikrjxRYQ/m0CI9Ip3Zfvdg6opZtg==\n\
        -----END EC PRIVATE KEY-----\n\
    ";
    const EC_P384_PKCS8: &str = "\
        -----BEGIN PRIVATE KEY-----\n\
        MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDBUW/zvViQCTrSdsHDe\n\
        wQBoKBTIXMU26KeDbt3tT/CStQ9pJy23fYyrC+p5vnLDt6mhZANiAARlgNiN8IcG\n\
        fs2epivlckfhPu+8SGW5t0vzT0HYGFzjmPdaz/zPbxHO7I8mdBk3VnT7mudPopd0\n\
        msIfV33R9gTaoGpdZfRqEVwRLSJSHJSETi6tZs6i5yC2oqRQuACJE4o=\n\
        -----END PRIVATE KEY-----\n\
    ";
    const ED25519_PKCS8: &str = "\
        -----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEIG5GnZFAGHhHyuYXy8oAzzWfHMMI021kg3QaP0u06sP8\n\
        -----END PRIVATE KEY-----\n\
    ";
    const CERTIFICATE: &str = "\
        -----BEGIN CERTIFICATE-----\n\
        MIIBbTCCAROgAwIBAgIULKO3o5/hwpAEdhLLiED6YCpJ6MkwCgYIKoZIzj0EAwIw\n\
        DDEKMAgGA1UEAwwBeDAeFw0yNjExMjgxMjAwNTVaFw0yNjExMjkxMjAwNTVaMAwx\n\
        CjAIBgNVBAMMAXgwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQ5Omq95nSQ4EXO\n\
        LB0b7+aM4oGftUAlMvHNw0wYUtwCIdWqAQj+5uOnn3EWqKSuPFFhD+bQIj0indl+\n\
        92Dqilm2o1MwUTAdBgNVHQ4EFgQU6LvpjZbJ6gkmWRNCjF2BsCLnGxwwHwYDVR0j\n\
        BBgwFoAU6LvpjZbJ6gkmWRNCjF2BsCLnGxwwDwYDVR0TAQH/BAUwAwEB/zAKBggq\n\
        hkjOPQQDAgNIADBFAiEA0/RpFh1xwI1CPVPkrylSBYlKFUthgaWt5YdwApYy3EUC\n\
        IAKJkULyPxhYA96dqO4t7x5FCCUv+kJhLzwq+ieS1BQc\n\
        -----END CERTIFICATE-----\n\
    ";

    const RSA_PKCS8_FP: &str = "RNISpLVyClVyxi62pJcuioCPQRosJIA-2PUt1EtSTEk";
    const RSA_PKCS1_FP: &str = "HWCn7xupNBKl9ajuUiV5qW2oVmblDFsaKldMhpVLJGQ";
    const EC_P256_SEC1_FP: &str = "Ph0QI3iTCPgOBsoQTx4UfN2vioU8grWclBIAaoG6cl4";
    const EC_P384_PKCS8_FP: &str = "tT09T5YGV9IUbX7KT9khTowky9bjpY4Z7y7zEvbtc4A";
    const ED25519_PKCS8_FP: &str = "o-oI9QmmUxmePy22RkJ-uj5DOt9Z_0g8gEklzf7OBBM";

    /// A fresh directory under the system temporary directory.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "capnp-actix-identity-{}-{name}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn pkcs8_rsa_key_has_the_fingerprint_openssl_gives() {
        let key = SecretKey::from_pem(RSA_PKCS8.as_bytes()).unwrap();
        assert_eq!(key.fingerprint().to_string(), RSA_PKCS8_FP);
        assert_eq!(key.pem(), RSA_PKCS8.as_bytes());
    }

    #[test]
    fn pkcs1_sec1_p384_and_ed25519_keys_load_with_openssls_fingerprints() {
        for (pem, fp) in [
            (RSA_PKCS1, RSA_PKCS1_FP),
            (EC_P256_SEC1, EC_P256_SEC1_FP),
            (EC_P384_PKCS8, EC_P384_PKCS8_FP),
            (ED25519_PKCS8, ED25519_PKCS8_FP),
        ] {
            let key = SecretKey::from_pem(pem.as_bytes()).unwrap();
            assert_eq!(key.fingerprint().to_string(), fp, "{key:?}");
            // The exact input bytes are kept, even when converted.
            assert_eq!(key.pem(), pem.as_bytes());
            let (cert, _) = key.certified_key();
            assert_eq!(
                Fingerprint::of_certificate_der(&cert).unwrap(),
                key.fingerprint()
            );
        }
    }

    #[test]
    fn fingerprint_text_round_trips_and_rejects_bad_text() {
        let fp: Fingerprint = RSA_PKCS8_FP.parse().unwrap();
        assert_eq!(fp.to_string(), RSA_PKCS8_FP);
        assert_eq!(VatAuth::from(fp), VatAuth::Sha256(fp.0));
        for bad in ["", "short", &format!("{RSA_PKCS8_FP}="), "+/+/"] {
            let e = bad.parse::<Fingerprint>().unwrap_err().to_string();
            assert!(e.contains("not a key fingerprint"), "{bad}: {e}");
        }
    }

    #[test]
    fn certificate_is_self_signed_for_cn_capnp_from_1970_to_9999() {
        for key in [
            SecretKey::from_pem(RSA_PKCS8.as_bytes()).unwrap(),
            SecretKey::ephemeral(),
        ] {
            let (cert, private) = key.certified_key();
            let (rest, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
            assert!(rest.is_empty());
            let cns: Vec<_> = parsed
                .subject()
                .iter_common_name()
                .map(|cn| cn.as_str().unwrap().to_string())
                .collect();
            assert_eq!(cns, ["capnp"]);
            assert_eq!(parsed.subject(), parsed.issuer());
            let from = parsed.validity().not_before.to_datetime();
            let until = parsed.validity().not_after.to_datetime();
            assert_eq!(from, time::OffsetDateTime::UNIX_EPOCH);
            assert_eq!(
                (until.year(), until.month(), until.day()),
                (9999, time::Month::December, 31)
            );
            assert_eq!(
                Fingerprint::of_certificate_der(&cert).unwrap(),
                key.fingerprint()
            );
            assert!(matches!(private, PrivateKeyDer::Pkcs8(_)));
            // Made once per key, not per call.
            assert_eq!(key.certified_key().0, cert);
        }
    }

    #[test]
    fn ephemeral_keys_are_p256_pkcs8_and_distinct() {
        let a = SecretKey::ephemeral();
        let b = SecretKey::ephemeral();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert!(a.pem().starts_with(b"-----BEGIN PRIVATE KEY-----"));
        let reloaded = SecretKey::from_pem(a.pem()).unwrap();
        assert_eq!(reloaded.fingerprint(), a.fingerprint());
        assert!(format!("{a:?}").contains("ECDSA P-256"));
    }

    #[test]
    fn load_or_create_writes_a_0600_pkcs8_p256_key_fast_and_reloads_it() {
        let dir = TempDir::new("create");
        let path = dir.0.join("vat.pem");
        let started = std::time::Instant::now();
        let created = SecretKey::load_or_create(&path).unwrap();
        let took = started.elapsed();
        // An RSA-2048 key took 7 to 11 s here unoptimised.
        assert!(took < std::time::Duration::from_secs(1), "took {took:?}");
        let text = fs::read(&path).unwrap();
        assert!(text.starts_with(b"-----BEGIN PRIVATE KEY-----\n"));
        assert_eq!(created.pem(), &text[..]);
        assert!(
            format!("{created:?}").contains("ECDSA P-256"),
            "{created:?}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let loaded = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(loaded.fingerprint(), created.fingerprint());
        assert_eq!(loaded.pem(), created.pem());
        assert_eq!(loaded.derived_id(b"main"), created.derived_id(b"main"));
    }

    #[test]
    fn existing_rsa_key_files_keep_loading_and_rsa_files_can_still_be_made() {
        let dir = TempDir::new("rsa-files");
        // A key file a reference vat made: loaded as it is, same fingerprint.
        let old = dir.0.join("old.pem");
        fs::write(&old, RSA_PKCS8).unwrap();
        let loaded = SecretKey::load_or_create(&old).unwrap();
        assert_eq!(loaded.fingerprint().to_string(), RSA_PKCS8_FP);
        assert_eq!(fs::read_to_string(&old).unwrap(), RSA_PKCS8);
        // A new file with another generator: what it gives is what is stored.
        let new = dir.0.join("new.pem");
        let made =
            SecretKey::load_or_create_with(&new, || SecretKey::from_pem(RSA_PKCS1.as_bytes()))
                .unwrap();
        assert_eq!(made.fingerprint().to_string(), RSA_PKCS1_FP);
        assert_eq!(fs::read_to_string(&new).unwrap(), RSA_PKCS1);
        // The generator runs only for a missing file.
        let again = SecretKey::load_or_create_with(&new, || panic!("file exists")).unwrap();
        assert_eq!(again.fingerprint(), made.fingerprint());
    }

    #[test]
    fn derived_ids_match_openssl_hmac_and_differ_per_name_and_key() {
        // `openssl dgst -sha256 -mac HMAC -macopt hexkey:$(sha256sum key.pem)`
        // over each name, for the RSA_PKCS8 file.
        assert_eq!(
            hex(&Sha256::digest(RSA_PKCS8.as_bytes())),
            "8845833cc7982f7a801cb633d6333e75b0634226fd50a522a40a40bf59c1ad85"
        );
        let key = SecretKey::from_pem(RSA_PKCS8.as_bytes()).unwrap();
        for (name, want) in [
            (
                "main",
                "eedbfcc9f42318b534991677396573f64f3ecbc67c14edefe5c8959dc0b1a72b",
            ),
            (
                "calc",
                "f97dc753c4b58971f1383672628f33f9ce5388129372723d1aaf53069c067dff",
            ),
            (
                "",
                "6296f31fbf26af38674ae6a528586bb8140125fe10425d189f839b016ea91771",
            ),
        ] {
            assert_eq!(hex(&key.derived_id(name.as_bytes())), want, "{name:?}");
        }
        let ec = SecretKey::from_pem(EC_P256_SEC1.as_bytes()).unwrap();
        assert_eq!(
            hex(&ec.derived_id(b"main")),
            "2cabf390e6ff32232def89c2983c47ba3652dbcbb37a125968b8a055a744363b"
        );
        assert_eq!(key.derived_id(b"main"), key.derived_id(b"main"));
        assert_ne!(key.derived_id(b"main"), key.derived_id(b"calc"));
        assert_ne!(key.derived_id(b"main"), ec.derived_id(b"main"));
    }

    #[test]
    fn generated_service_ids_are_20_random_bytes() {
        let a = generated_service_id();
        assert_eq!(a.len(), 20);
        assert_ne!(a, generated_service_id());
    }

    #[test]
    fn bad_key_inputs_say_what_is_wrong() {
        let cases: [(&[u8], &str); 7] = [
            (b"", "no PEM private key found"),
            (b"hello, world\n", "no PEM private key found"),
            (CERTIFICATE.as_bytes(), "holds a CERTIFICATE but no private key"),
            (
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n",
                "malformed PEM: no -----END PRIVATE KEY----- line",
            ),
            (
                b"-----BEGIN PRIVATE KEY-----\nMAMCAQA=\n-----END PRIVATE KEY-----\n",
                "bad key data",
            ),
            (
                b"-----BEGIN EC PRIVATE KEY-----\nMAMCAQE=\n-----END EC PRIVATE KEY-----\n",
                "bad key data",
            ),
            (
                b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "encrypted private key",
            ),
        ];
        for (input, want) in cases {
            let e = SecretKey::from_pem(input).unwrap_err().to_string();
            assert!(
                e.contains(want),
                "{:?}: {e}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn unsupported_key_types_are_named() {
        use rsa::pkcs8::EncodePrivateKey as _;
        // A 1024-bit RSA key: ring will not sign with it.
        let small = rsa::RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
        let pem = small.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let e = SecretKey::from_pem(pem.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("RSA key of 1024 bits"), "{e}");
        // Ed448 (`openssl genpkey -algorithm ED448`).
        let ed448 = "-----BEGIN PRIVATE KEY-----\n\
            MEcCAQAwBQYDK2VxBDsEOVd7SCKbm2mLscocwmUjqFi5w+2xihd51CPELjwWnaH4\n\
            c4IQ06T/H2HKVu/wI1Qktw1BhtHvAFvYZA==\n\
            -----END PRIVATE KEY-----\n";
        let e = SecretKey::from_pem(ed448.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unsupported key type: Ed448"), "{e}");
    }

    #[test]
    fn key_file_errors_name_the_file() {
        let dir = TempDir::new("errors");
        // A directory where the file should be.
        let e = SecretKey::load_or_create(&dir.0).unwrap_err().to_string();
        assert!(e.contains("cannot read secret key file"), "{e}");
        assert!(e.contains(&dir.0.display().to_string()), "{e}");
        // A file that is not a key.
        let junk = dir.0.join("junk.pem");
        fs::write(&junk, "not a key").unwrap();
        let e = SecretKey::load_or_create(&junk).unwrap_err().to_string();
        assert!(e.contains(&junk.display().to_string()), "{e}");
        assert!(e.contains("no PEM private key found"), "{e}");
        // A key file in a directory that does not exist.
        let nowhere = dir.0.join("missing").join("vat.pem");
        let e = SecretKey::load_or_create(&nowhere).unwrap_err().to_string();
        assert!(e.contains("cannot create secret key file"), "{e}");
        assert!(e.contains(&nowhere.display().to_string()), "{e}");
        assert!(!nowhere.exists());
    }

    #[test]
    fn key_creation_does_not_overwrite_a_file_that_appears() {
        let dir = TempDir::new("race");
        let path = dir.0.join("vat.pem");
        fs::write(&path, RSA_PKCS8).unwrap();
        let e = write_new_key_file(&path, b"other").unwrap_err().to_string();
        assert!(e.contains("cannot create secret key file"), "{e}");
        assert_eq!(fs::read_to_string(&path).unwrap(), RSA_PKCS8);
    }

    #[test]
    fn secret_keys_are_send_sync_and_debug_hides_the_key() {
        fn send_sync<T: Send + Sync + Clone>() {}
        send_sync::<SecretKey>();
        let key = SecretKey::from_pem(RSA_PKCS8.as_bytes()).unwrap();
        let debug = format!("{key:?}");
        assert!(debug.contains(RSA_PKCS8_FP), "{debug}");
        assert!(!debug.contains("MII"), "{debug}");
        assert!(!debug.contains("BEGIN"), "{debug}");
    }

    #[test]
    fn certificates_that_do_not_parse_are_reported() {
        let e = Fingerprint::of_certificate_der(b"junk")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot parse certificate"), "{e}");
    }
}
