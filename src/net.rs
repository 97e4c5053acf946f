//! Sockets: dialing and listening on [`Address`]es.
//!
//! Every TCP connection gets TCP_NODELAY (calls are small and latency
//! matters more than packet count) and TCP keepalive (both those we open
//! and those we accept), so that a peer that vanished is noticed: the
//! first probe after [`KEEPALIVE_IDLE`] of silence, then every
//! [`KEEPALIVE_INTERVAL`], the connection dropped by the kernel after
//! [`KEEPALIVE_PROBES`] unanswered ones (about 110 s in all; Linux's own
//! default waits 2 hours before the first probe). For a faster verdict
//! that also covers a peer that is up but not answering (a paused
//! process), use the connection heartbeat (`--capnp-heartbeat-ms`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener, UnixStream};

use crate::address::Address;

/// A connected socket, TCP or Unix.
#[derive(Debug)]
pub enum Stream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix-domain socket connection.
    Unix(UnixStream),
    /// What is left behind while the socket moves to another arbiter (see
    /// [`Stream::reattach`]); reads and writes fail with NotConnected.
    Moving,
}

impl Stream {
    /// Takes the socket off the reactor it was registered with and
    /// registers it with the current thread's: a stream accepted (or
    /// dialled) on one arbiter can then be served on another, whose own
    /// event loop waits for it. Must run on that arbiter.
    pub fn reattach(&mut self) -> io::Result<()> {
        *self = match std::mem::replace(self, Stream::Moving) {
            Stream::Tcp(s) => Stream::Tcp(TcpStream::from_std(s.into_std()?)?),
            Stream::Unix(s) => Stream::Unix(UnixStream::from_std(s.into_std()?)?),
            Stream::Moving => return Err(moving()),
        };
        Ok(())
    }
}

fn moving() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the socket is moving to another arbiter",
    )
}

/// A stream that can be served on another arbiter than the one that
/// opened it: a socket, or TLS over one.
pub trait Movable: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// See [`Stream::reattach`].
    fn reattach(&mut self) -> io::Result<()>;
}

impl Movable for Box<dyn Movable> {
    fn reattach(&mut self) -> io::Result<()> {
        (**self).reattach()
    }
}

impl Movable for Stream {
    fn reattach(&mut self) -> io::Result<()> {
        Stream::reattach(self)
    }
}

impl Movable for tokio_rustls::server::TlsStream<Stream> {
    fn reattach(&mut self) -> io::Result<()> {
        self.get_mut().0.reattach()
    }
}

impl Movable for tokio_rustls::client::TlsStream<Stream> {
    fn reattach(&mut self) -> io::Result<()> {
        self.get_mut().0.reattach()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Moving => Poll::Ready(Err(moving())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Moving => Poll::Ready(Err(moving())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Moving => Poll::Ready(Err(moving())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
            Stream::Moving => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Moving => Poll::Ready(Err(moving())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Moving => Poll::Ready(Err(moving())),
        }
    }
}

/// Adds the address to an I/O error, so that it names what failed.
pub(crate) fn with_context(e: io::Error, address: &Address) -> io::Error {
    io::Error::new(e.kind(), format!("{address}: {e}"))
}

/// Says that the error happened while connecting to `address`.
pub(crate) fn connecting_to(e: io::Error, address: &Address) -> io::Error {
    io::Error::new(e.kind(), format!("connecting to {address}: {e}"))
}

/// Opens a connection to `address`: every address a TCP host name
/// resolves to is tried in turn. Every error starts with `connecting to
/// ADDRESS:`.
pub async fn dial(address: &Address) -> io::Result<Stream> {
    match address {
        Address::Tcp { host, port } => {
            let mut last = None;
            let addrs = tokio::net::lookup_host((host.as_str(), *port))
                .await
                .map_err(|e| connecting_to(e, address))?;
            for addr in addrs {
                match dial_tcp(addr).await {
                    Ok(s) => return Ok(Stream::Tcp(s)),
                    Err(e) => last = Some(e),
                }
            }
            Err(connecting_to(
                last.unwrap_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "the host name resolves to nothing")
                }),
                address,
            ))
        }
        Address::Unix(path) => UnixStream::connect(path)
            .await
            .map(Stream::Unix)
            .map_err(|e| connecting_to(e, address)),
    }
}

/// Silence on a TCP connection before the kernel's first keepalive probe.
pub const KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Time between keepalive probes.
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Unanswered keepalive probes after which the kernel drops the connection.
pub const KEEPALIVE_PROBES: u32 = 5;

/// Turns TCP keepalive on with our timings (see the module docs).
fn keep_alive(stream: &TcpStream) -> io::Result<()> {
    let timings = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "freebsd"
    ))]
    let timings = timings.with_retries(KEEPALIVE_PROBES);
    socket2::SockRef::from(stream).set_tcp_keepalive(&timings)
}

/// A TCP connection to one socket address, with keepalive and
/// TCP_NODELAY.
async fn dial_tcp(addr: std::net::SocketAddr) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }?;
    socket.set_nodelay(true)?;
    let stream = socket.connect(addr).await?;
    keep_alive(&stream)?;
    Ok(stream)
}

/// A bound listening socket.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix-domain socket.
    Unix(UnixListener),
}

impl Listener {
    /// Binds `address`. A stale Unix socket file at the path (left by a
    /// process that died) is replaced; any other file there is an error.
    pub async fn bind(address: &Address) -> io::Result<Self> {
        match address {
            Address::Tcp { host, port } => TcpListener::bind((host.as_str(), *port))
                .await
                .map(Listener::Tcp)
                .map_err(|e| with_context(e, address)),
            Address::Unix(path) => {
                if std::fs::symlink_metadata(path).is_ok_and(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_socket()
                }) {
                    let _ = std::fs::remove_file(path);
                }
                UnixListener::bind(path)
                    .map(Listener::Unix)
                    .map_err(|e| with_context(e, address))
            }
        }
    }

    /// The address actually bound (the port chosen, for port 0).
    pub fn local_address(&self, requested: &Address) -> io::Result<Address> {
        match (self, requested) {
            (Listener::Tcp(l), Address::Tcp { host, .. }) => Ok(Address::Tcp {
                host: host.clone(),
                port: l.local_addr()?.port(),
            }),
            _ => Ok(requested.clone()),
        }
    }

    /// Waits for the next connection; gives it with a description of the
    /// peer for logs. TCP connections get TCP_NODELAY and SO_KEEPALIVE.
    pub async fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                let _ = keep_alive(&s);
                Ok((Stream::Tcp(s), peer.to_string()))
            }
            Listener::Unix(l) => {
                let (s, _) = l.accept().await?;
                Ok((Stream::Unix(s), "unix socket peer".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_connections_both_ways_get_keepalive_with_our_timings() {
        let address = Address::parse("tcp:127.0.0.1:0").unwrap();
        let listener = Listener::bind(&address).await.unwrap();
        let bound = listener.local_address(&address).unwrap();
        let (dialled, accepted) = tokio::join!(dial(&bound), listener.accept());
        for stream in [dialled.unwrap(), accepted.unwrap().0] {
            let Stream::Tcp(s) = stream else {
                panic!("a TCP stream")
            };
            let sock = socket2::SockRef::from(&s);
            assert!(sock.keepalive().unwrap());
            assert_eq!(sock.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
            assert_eq!(sock.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
            assert_eq!(sock.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
            assert!(s.nodelay().unwrap());
        }
    }
}
