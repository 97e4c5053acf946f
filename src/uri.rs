//! Sturdy references as URIs: `capnp://AUTH@HOST:PORT/SERVICE-ID` and, for
//! Unix sockets, `capnp://AUTH@/abs/path/to.socket/SERVICE-ID`.
//!
//! `AUTH` is `insecure` (no TLS) or `sha-256:FINGERPRINT`, the base64url
//! SHA-256 of the vat's public key. The service ID is base64url without
//! padding of its raw bytes (`main` is `bWFpbg`); an empty ID needs the
//! trailing `/`.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::address::Address;

/// How the client authenticates the vat a URI names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VatAuth {
    /// No TLS.
    Insecure,
    /// TLS; the server's public key must have this SHA-256 fingerprint.
    Sha256([u8; 32]),
}

/// A parsed sturdy reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SturdyUri {
    /// How to authenticate the vat.
    pub auth: VatAuth,
    /// Where the vat is.
    pub address: Address,
    /// The service on that vat (its raw bytes).
    pub service_id: Vec<u8>,
}

/// Why a sturdy URI could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// Not a URI at all.
    #[error("{uri:?} is not a valid URI: {reason}")]
    Malformed {
        /// The input.
        uri: String,
        /// What the URI parser said.
        reason: String,
    },
    /// Not `capnp://`.
    #[error("{0:?}: wrong scheme (a sturdy ref starts with capnp://)")]
    WrongScheme(String),
    /// A TCP address without a port.
    #[error("{0:?}: missing port")]
    MissingPort(String),
    /// No `sha-256:` or `insecure` before the `@`.
    #[error("{0:?}: missing digest hash type (expected sha-256:FINGERPRINT@ or insecure@)")]
    MissingHashType(String),
    /// `sha-256` without the fingerprint.
    #[error("{0:?}: missing digest value after sha-256:")]
    MissingDigest(String),
    /// A hash other than SHA-256.
    #[error("{uri:?}: unknown hash type {hash:?} (only sha-256 is supported)")]
    UnknownHashType {
        /// The input.
        uri: String,
        /// The hash named.
        hash: String,
    },
    /// A fingerprint that is not 32 bytes of base64url.
    #[error("{0:?}: the sha-256 fingerprint must be 43 characters of base64url")]
    BadDigest(String),
    /// A service ID that is not base64url.
    #[error("{0:?}: the service ID is not valid base64url")]
    BadServiceId(String),
}

/// Placeholder host for the Unix-socket form, whose empty host the URL
/// parser rejects; never used as a host.
const UNIX_PLACEHOLDER: &str = "unix-socket.invalid";

impl SturdyUri {
    /// Parses a sturdy URI.
    pub fn parse(s: &str) -> Result<Self, UriError> {
        let malformed = |e: url::ParseError| UriError::Malformed {
            uri: s.into(),
            reason: e.to_string(),
        };
        // `capnp://AUTH@/path`: the URL standard wants a host after
        // credentials, so give the parser one and remember it was absent.
        let (text, unix) = match s.split_once("@/") {
            Some((head, tail)) if head.starts_with("capnp://") && !head[8..].contains('/') => {
                (format!("{head}@{UNIX_PLACEHOLDER}/{tail}"), true)
            }
            _ => (s.to_string(), false),
        };
        let url = url::Url::parse(&text).map_err(malformed)?;
        if url.scheme() != "capnp" {
            return Err(UriError::WrongScheme(s.into()));
        }
        let auth = match (url.username(), url.password()) {
            ("insecure", None) => VatAuth::Insecure,
            ("", _) => return Err(UriError::MissingHashType(s.into())),
            ("sha-256", None) | ("sha-256", Some("")) => {
                return Err(UriError::MissingDigest(s.into()))
            }
            ("sha-256", Some(d)) => {
                let bytes = URL_SAFE_NO_PAD
                    .decode(d)
                    .map_err(|_| UriError::BadDigest(s.into()))?;
                VatAuth::Sha256(
                    bytes
                        .try_into()
                        .map_err(|_| UriError::BadDigest(s.into()))?,
                )
            }
            (_, None) => return Err(UriError::MissingHashType(s.into())),
            (hash, Some(_)) => {
                return Err(UriError::UnknownHashType {
                    uri: s.into(),
                    hash: hash.into(),
                })
            }
        };
        let path = url.path();
        let (address, id) = if unix {
            // The socket path is everything up to the last '/'.
            let (sock, id) = path.rsplit_once('/').unwrap_or(("", path));
            let sock = percent_decode(sock);
            (Address::Unix(sock.into()), id)
        } else {
            let host = url.host_str().unwrap_or_default();
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = url.port().ok_or_else(|| UriError::MissingPort(s.into()))?;
            (Address::Tcp { host, port }, path.trim_start_matches('/'))
        };
        let service_id = URL_SAFE_NO_PAD
            .decode(id)
            .map_err(|_| UriError::BadServiceId(s.into()))?;
        Ok(SturdyUri {
            auth,
            address,
            service_id,
        })
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("p={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

impl FromStr for SturdyUri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SturdyUri::parse(s)
    }
}

impl fmt::Display for SturdyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("capnp://")?;
        match &self.auth {
            VatAuth::Insecure => f.write_str("insecure@")?,
            VatAuth::Sha256(d) => write!(f, "sha-256:{}@", URL_SAFE_NO_PAD.encode(d))?,
        }
        match &self.address {
            Address::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}")?,
            Address::Tcp { host, port } => write!(f, "{host}:{port}")?,
            Address::Unix(p) => write!(f, "{}", p.display())?,
        }
        write!(f, "/{}", URL_SAFE_NO_PAD.encode(&self.service_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "6q6bGWzGCd1vKJmrcyTPfhiVx3ChbcIgwPz_Rm4Nz2Q";

    #[test]
    fn scenario_63_sturdy_uris_round_trip_in_all_four_forms() {
        for s in [
            "capnp://insecure@127.0.0.1:7000/bWFpbg".to_string(),
            format!("capnp://sha-256:{FP}@example.com:7000/bWFpbg"),
            "capnp://insecure@/tmp/echo.sock/bWFpbg".to_string(),
            format!("capnp://sha-256:{FP}@/run/vat/calc.socket/"),
            "capnp://insecure@[::1]:9/bWFpbg".to_string(),
        ] {
            let u = SturdyUri::parse(&s).unwrap();
            assert_eq!(u.to_string(), s);
        }
        let u = SturdyUri::parse("capnp://insecure@/tmp/calc.socket/").unwrap();
        assert_eq!(u.address, Address::Unix("/tmp/calc.socket".into()));
        assert!(u.service_id.is_empty());
        let u = SturdyUri::parse("capnp://insecure@127.0.0.1:7000/bWFpbg").unwrap();
        assert_eq!(u.service_id, b"main");
        assert_eq!(u.auth, VatAuth::Insecure);
    }

    #[test]
    fn every_uri_error_is_clear() {
        let cases = [
            ("http://insecure@host:1/", "wrong scheme"),
            ("capnp://insecure@host/bWFpbg", "missing port"),
            ("capnp://host:7000/bWFpbg", "missing digest hash type"),
            ("capnp://sha-256@host:7000/bWFpbg", "missing digest value"),
            ("capnp://md5:abcd@host:7000/", "unknown hash type \"md5\""),
            ("capnp://sha-256:short@host:7000/", "43 characters"),
            ("capnp://insecure@host:7000/!!", "service ID"),
            ("not a uri", "not a valid URI"),
        ];
        for (input, want) in cases {
            let e = SturdyUri::parse(input).unwrap_err().to_string();
            assert!(e.contains(want), "{input}: {e}");
        }
    }
}
