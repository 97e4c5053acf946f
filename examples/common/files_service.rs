//! The `files` service (`schemas/files.capnp`): a flat directory of named
//! files, written through `ByteSink`s, and the client side's helpers.
//!
//! Nothing here depends on the runtime that hosts it: the same
//! [`FilesService`] and [`FileSink`] run on capnp-actix (`examples/files.rs`)
//! and on the capnp-rpc crate (`tests/interop_files.rs`).
//!
//! * **Names** ([`check_name`]): 1-255 bytes of UTF-8 without `/` or NUL,
//!   and neither `.` nor `..`, exactly as the schema says; anything else
//!   fails the call with an error naming the problem. A valid name can only
//!   ever mean a file directly inside the served directory.
//! * **Sinks** ([`FileSink`]): bytes go to a temporary file next to the
//!   target (`.<random>.part`, created exclusively) while a SHA-256 runs over
//!   them; `end` flushes it and renames it over the target, so the file
//!   appears under its name only complete. A sink released before `end`
//!   (its server dropped) removes the temporary file; so does a failed write.
//! * **Streaming out** ([`send_file`]): a file is written to a sink in
//!   [`CHUNK`]-byte `write` calls, each `send()` awaited: the runtime's flow
//!   control decides how many are in flight, and a failed write fails the
//!   rest. Then `end`, whose size and SHA-256 the caller compares.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use capnp::Error;
use capnp_actix::schemas::files_capnp::{byte_sink, files};

use sha2::{Digest, Sha256};
/// Bytes per `write` call.
pub const CHUNK: usize = 64 * 1024;

/// The longest name the schema allows, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// A size and SHA-256, as `end`, `download` and `stat` report them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Bytes.
    pub size: u64,
    /// SHA-256 of those bytes.
    pub sha256: [u8; 32],
}

impl Summary {
    /// The SHA-256 in lowercase hex.
    pub fn hex(&self) -> String {
        self.sha256.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads a size and a SHA-256 field pair; the digest must be 32 bytes.
    pub fn read(size: u64, sha256: &[u8]) -> Result<Summary, Error> {
        let sha256 = sha256.try_into().map_err(|_| {
            Error::failed(format!(
                "the peer's SHA-256 has {} bytes, not 32",
                sha256.len()
            ))
        })?;
        Ok(Summary { size, sha256 })
    }
}

/// Checks `name` against the schema's rule, or says what is wrong with it.
pub fn check_name(name: &str) -> Result<(), Error> {
    let problem = if name.is_empty() {
        "is empty".to_string()
    } else if name.len() > MAX_NAME_BYTES {
        format!("is {} bytes long (at most {MAX_NAME_BYTES})", name.len())
    } else if name.contains('/') {
        "contains '/'".to_string()
    } else if name.contains('\0') {
        "contains NUL".to_string()
    } else if name == "." || name == ".." {
        "is not a file name".to_string()
    } else {
        return Ok(());
    };
    Err(Error::failed(format!(
        "invalid file name {name:?}: it {problem}"
    )))
}

/// The `name` parameter of a call, read and checked.
fn read_name(name: capnp::text::Reader<'_>) -> Result<String, Error> {
    let name = name
        .to_str()
        .map_err(|_| Error::failed("invalid file name: it is not UTF-8".into()))?;
    check_name(name)?;
    Ok(name.to_string())
}

/// The size and SHA-256 of the file at `path`.
pub fn summarize_file(path: &Path) -> std::io::Result<Summary> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Summary {
        size,
        sha256: hasher.finalize().into(),
    })
}

/// An error about the served file `name` (its path on the server stays
/// there).
fn name_error(what: &str, name: &str, e: std::io::Error) -> Error {
    Error::failed(format!("{what} the file {name:?}: {e}"))
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::failed(format!("{what} {}: {e}", path.display()))
}

/// Makes a capability of a sink: `Cap::new(sink).client()` on capnp-actix,
/// `capnp_rpc::new_client` on the capnp-rpc crate.
pub type HostSink = fn(FileSink) -> byte_sink::Client;

/// The bootstrap capability of a `files` vat: the files of one directory.
pub struct FilesService {
    dir: PathBuf,
    host_sink: HostSink,
}

impl FilesService {
    /// Serves the files directly inside `dir`, hosting the sinks `upload`
    /// returns with `host_sink`.
    pub fn new(dir: impl Into<PathBuf>, host_sink: HostSink) -> FilesService {
        FilesService {
            dir: dir.into(),
            host_sink,
        }
    }
}

impl files::Server for FilesService {
    async fn upload(
        self: Rc<Self>,
        params: files::UploadParams,
        mut results: files::UploadResults,
    ) -> Result<(), Error> {
        let name = read_name(params.get()?.get_name()?)?;
        let sink = FileSink::create(&self.dir.join(&name))?;
        results.get().set_sink((self.host_sink)(sink));
        Ok(())
    }

    async fn download(
        self: Rc<Self>,
        params: files::DownloadParams,
        mut results: files::DownloadResults,
    ) -> Result<(), Error> {
        let params = params.get()?;
        let name = read_name(params.get_name()?)?;
        let sink = params.get_sink()?;
        let path = self.dir.join(&name);
        let file = File::open(&path).map_err(|e| name_error("cannot open", &name, e))?;
        let sent = send_file(file, &sink, |_| {}).await?;
        let ended = end_sink(&sink).await?;
        if ended != sent {
            return Err(Error::failed(format!(
                "the sink received {} bytes (SHA-256 {}), but {} bytes (SHA-256 {}) were sent",
                ended.size,
                ended.hex(),
                sent.size,
                sent.hex()
            )));
        }
        let mut out = results.get();
        out.set_size(sent.size);
        out.set_sha256(&sent.sha256);
        Ok(())
    }

    async fn stat(
        self: Rc<Self>,
        params: files::StatParams,
        mut results: files::StatResults,
    ) -> Result<(), Error> {
        let name = read_name(params.get()?.get_name()?)?;
        let path = self.dir.join(&name);
        let summary = summarize_file(&path).map_err(|e| name_error("cannot read", &name, e))?;
        let mut out = results.get();
        out.set_size(summary.size);
        out.set_sha256(&summary.sha256);
        Ok(())
    }
}

/// An open sink's state.
struct Open {
    file: BufWriter<File>,
    temp: PathBuf,
    hasher: Sha256,
    size: u64,
}

/// A `ByteSink` that stores what it receives as the file `target`; see the
/// module docs.
pub struct FileSink {
    target: PathBuf,
    state: RefCell<Option<Open>>,
    on_write: Box<dyn Fn(usize)>,
}

impl FileSink {
    /// A sink for `target`, writing to a new temporary file beside it.
    pub fn create(target: &Path) -> Result<FileSink, Error> {
        FileSink::with_progress(target, Box::new(|_| {}))
    }

    /// Like [`FileSink::create`], calling `on_write` with the length of
    /// every write.
    pub fn with_progress(target: &Path, on_write: Box<dyn Fn(usize)>) -> Result<FileSink, Error> {
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let temp = dir.join(format!(".{:016x}.part", rand::random::<u64>()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| io_error("cannot create", &temp, e))?;
        Ok(FileSink {
            target: target.to_path_buf(),
            state: RefCell::new(Some(Open {
                file: BufWriter::with_capacity(CHUNK, file),
                temp,
                hasher: Sha256::new(),
                size: 0,
            })),
            on_write,
        })
    }

    fn write_bytes(&self, bytes: &[u8]) -> Result<(), Error> {
        let mut state = self.state.borrow_mut();
        let open = state
            .as_mut()
            .ok_or_else(|| Error::failed("write after the stream ended or failed".into()))?;
        if let Err(e) = open.file.write_all(bytes) {
            let temp = open.temp.clone();
            discard(state.take());
            return Err(io_error("cannot write", &temp, e));
        }
        open.hasher.update(bytes);
        open.size += bytes.len() as u64;
        drop(state);
        (self.on_write)(bytes.len());
        Ok(())
    }

    fn finish(&self) -> Result<Summary, Error> {
        let open = self
            .state
            .borrow_mut()
            .take()
            .ok_or_else(|| Error::failed("end after the stream ended or failed".into()))?;
        let Open {
            file,
            temp,
            hasher,
            size,
        } = open;
        let stored = file
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(&temp, &self.target));
        if let Err(e) = stored {
            let _ = std::fs::remove_file(&temp);
            return Err(io_error("cannot store", &self.target, e));
        }
        Ok(Summary {
            size,
            sha256: hasher.finalize().into(),
        })
    }
}

/// Drops an unfinished sink's file and removes it.
fn discard(open: Option<Open>) {
    if let Some(open) = open {
        drop(open.file);
        let _ = std::fs::remove_file(&open.temp);
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        discard(self.state.get_mut().take());
    }
}

impl byte_sink::Server for FileSink {
    async fn write(self: Rc<Self>, params: byte_sink::WriteParams) -> Result<(), Error> {
        self.write_bytes(params.get()?.get_bytes()?)
    }

    async fn end(
        self: Rc<Self>,
        _: byte_sink::EndParams,
        mut results: byte_sink::EndResults,
    ) -> Result<(), Error> {
        let summary = self.finish()?;
        let mut out = results.get();
        out.set_size(summary.size);
        out.set_sha256(&summary.sha256);
        Ok(())
    }
}

/// Writes everything `file` holds to `sink` (no `end`), calling `on_sent`
/// with the length of each write; returns what was sent.
pub async fn send_file(
    mut file: impl Read,
    sink: &byte_sink::Client,
    on_sent: impl Fn(usize),
) -> Result<Summary, Error> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::failed(format!("cannot read the file to send: {e}")))?;
        if n == 0 {
            break;
        }
        let mut request = sink.write_request();
        request.get().set_bytes(&buf[..n]);
        request.send().await?;
        hasher.update(&buf[..n]);
        size += n as u64;
        on_sent(n);
    }
    Ok(Summary {
        size,
        sha256: hasher.finalize().into(),
    })
}

/// Calls `end` on `sink` and reads what it reports.
pub async fn end_sink(sink: &byte_sink::Client) -> Result<Summary, Error> {
    let response = sink.end_request().send().promise.await?;
    let ended = response.get()?;
    Summary::read(ended.get_size(), ended.get_sha256()?)
}
