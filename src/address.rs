//! Listen and connect addresses: `tcp:HOST:PORT`, `tcp:[IPv6]:PORT` and
//! `unix:PATH`, as the reference vats spell them on the command line.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where a vat listens or connects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A TCP host (name or IP address, IPv6 without brackets) and port.
    Tcp {
        /// Host name or IP address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix-domain socket at an absolute path.
    Unix(PathBuf),
}

/// Why an address could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No `scheme:` prefix at all.
    #[error("address {0:?} is missing ':' (expected tcp:HOST:PORT or unix:PATH)")]
    MissingColon(String),
    /// A scheme other than `tcp` or `unix`.
    #[error("address {0:?}: Only tcp:HOST:PORT and unix:PATH addresses are supported")]
    UnsupportedScheme(String),
    /// `tcp:HOST` without a port.
    #[error("address {0:?} is missing a port (expected tcp:HOST:PORT)")]
    MissingPort(String),
    /// A port that is not a number from 0 to 65535.
    #[error("address {addr:?} has an invalid port {port:?}")]
    InvalidPort {
        /// The address.
        addr: String,
        /// The port text.
        port: String,
    },
    /// `tcp::PORT`.
    #[error("address {0:?} is missing a host (expected tcp:HOST:PORT)")]
    MissingHost(String),
    /// `unix:` with nothing after it.
    #[error("address {0:?} is missing a socket path (expected unix:PATH)")]
    MissingPath(String),
}

impl Address {
    /// Parses an address; a relative Unix path is made absolute against
    /// the current directory.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let Some((scheme, rest)) = s.split_once(':') else {
            return Err(AddressError::MissingColon(s.into()));
        };
        match scheme {
            "tcp" => {
                let (host, port) =
                    split_host_port(rest).ok_or_else(|| AddressError::MissingPort(s.into()))?;
                if host.is_empty() {
                    return Err(AddressError::MissingHost(s.into()));
                }
                let port = port.parse::<u16>().map_err(|_| AddressError::InvalidPort {
                    addr: s.into(),
                    port: port.into(),
                })?;
                Ok(Address::Tcp {
                    host: host.into(),
                    port,
                })
            }
            "unix" => {
                if rest.is_empty() {
                    return Err(AddressError::MissingPath(s.into()));
                }
                Ok(Address::Unix(absolute(Path::new(rest))))
            }
            _ => Err(AddressError::UnsupportedScheme(s.into())),
        }
    }
}

/// `HOST:PORT` or `[IPv6]:PORT`, split at the port's colon.
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(inner) = s.strip_prefix('[') {
        let (host, after) = inner.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((host, port));
    }
    s.rsplit_once(':')
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    match std::env::current_dir() {
        Ok(d) => d.join(p),
        Err(_) => p.to_path_buf(),
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp { host, port } if host.contains(':') => write!(f, "tcp:[{host}]:{port}"),
            Address::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_ipv6_and_unix_addresses() {
        assert_eq!(
            Address::parse("tcp:127.0.0.1:7000").unwrap(),
            Address::Tcp {
                host: "127.0.0.1".into(),
                port: 7000
            }
        );
        assert_eq!(
            Address::parse("tcp:[::1]:7000").unwrap(),
            Address::Tcp {
                host: "::1".into(),
                port: 7000
            }
        );
        assert_eq!(
            Address::parse("unix:/tmp/x.sock").unwrap(),
            Address::Unix("/tmp/x.sock".into())
        );
        let rel = Address::parse("unix:x.sock").unwrap();
        assert_eq!(
            rel,
            Address::Unix(std::env::current_dir().unwrap().join("x.sock"))
        );
        for s in ["tcp:localhost:1", "tcp:[::1]:65535", "unix:/a/b"] {
            assert_eq!(Address::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn every_error_names_the_problem() {
        let cases = [
            ("localhost", "missing ':'"),
            (
                "udp:host:1",
                "Only tcp:HOST:PORT and unix:PATH addresses are supported",
            ),
            ("tcp:host", "missing a port"),
            ("tcp:host:http", "invalid port \"http\""),
            ("tcp:host:70000", "invalid port \"70000\""),
            ("tcp::7000", "missing a host"),
            ("tcp:[::1]7000", "missing a port"),
            ("unix:", "missing a socket path"),
        ];
        for (input, want) in cases {
            let e = Address::parse(input).unwrap_err().to_string();
            assert!(e.contains(want), "{input}: {e}");
            assert!(e.contains(input), "{input}: {e}");
        }
    }
}
