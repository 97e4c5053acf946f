//! Persistence on disk: the [`FileStore`] of saved services, and cap files
//! that hold one sturdy ref.
//!
//! A saved service is a Cap'n Proto struct (whatever the application needs
//! to rebuild it) stored under the digest of its service ID, one file per
//! digest, named by the digest in base64url: a name made only of
//! `A-Z a-z 0-9 - _`, so that no digest can name a path outside the store.
//! Files are written whole or not at all: to a temporary file in the same
//! directory, synced, renamed over the target, and the directory synced (the
//! reference vats skip both syncs; a crash could then leave an empty file).
//! Messages are stored in the standard stream framing, with the segment
//! table, so that multi-segment messages load back as they were.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::uri::{SturdyUri, UriError};

/// Saved structs, one file per digest, named base64url (no padding) of the
/// digest inside [`dir`](FileStore::dir).
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// Opens the store in `dir`, creating the directory (mode 0700) if it
    /// is missing. An existing directory keeps its permissions.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(&dir).map_err(|e| at(&dir, e))?;
        Ok(FileStore { dir })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of `digest`.
    fn path_of(&self, digest: &[u8]) -> io::Result<PathBuf> {
        if digest.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: an empty digest names no file", self.dir.display()),
            ));
        }
        Ok(self.dir.join(URL_SAFE_NO_PAD.encode(digest)))
    }

    /// Saves `message` under `digest`, replacing what was there. The file
    /// holds the standard stream framing (segment table, then segments).
    pub fn save<A: capnp::message::Allocator>(
        &self,
        digest: &[u8],
        message: &capnp::message::Builder<A>,
    ) -> io::Result<()> {
        let path = self.path_of(digest)?;
        write_atomically(&path, |w| {
            capnp::serialize::write_message(w, message).map_err(capnp_to_io)
        })
    }

    /// Like [`FileStore::save`], but the file is written and synced on
    /// tokio's blocking thread pool rather than on the calling arbiter, so
    /// a service saving from a method body does not hold up the other
    /// calls its arbiter serves while the disk syncs. The message is
    /// serialized first, on the calling thread.
    pub async fn save_off_arbiter<A: capnp::message::Allocator>(
        &self,
        digest: &[u8],
        message: &capnp::message::Builder<A>,
    ) -> io::Result<()> {
        let path = self.path_of(digest)?;
        let bytes = capnp::serialize::write_message_to_words(message);
        tokio::task::spawn_blocking(move || write_atomically(&path, |w| w.write_all(&bytes)))
            .await
            .map_err(|e| io::Error::other(format!("the store's writing thread failed: {e}")))?
    }

    /// Like [`FileStore::remove`], on tokio's blocking thread pool (see
    /// [`FileStore::save_off_arbiter`]).
    pub async fn remove_off_arbiter(&self, digest: &[u8]) -> io::Result<()> {
        let store = self.clone();
        let digest = digest.to_vec();
        tokio::task::spawn_blocking(move || store.remove(&digest))
            .await
            .map_err(|e| io::Error::other(format!("the store's writing thread failed: {e}")))?
    }

    /// The message saved under `digest`, or `None` if there is none.
    pub fn load(
        &self,
        digest: &[u8],
    ) -> io::Result<Option<capnp::message::Reader<capnp::serialize::OwnedSegments>>> {
        let path = self.path_of(digest)?;
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(at(&path, e)),
        };
        let message = capnp::serialize::read_message(
            BufReader::new(file),
            capnp::message::ReaderOptions::default(),
        )
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a saved Cap'n Proto message: {e}", path.display()),
            )
        })?;
        Ok(Some(message))
    }

    /// Deletes what is saved under `digest` (nothing saved is fine).
    pub fn remove(&self, digest: &[u8]) -> io::Result<()> {
        let path = self.path_of(digest)?;
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(at(&path, e)),
        }
    }
}

/// Why a cap file gave no sturdy ref.
#[derive(Debug, thiserror::Error)]
pub enum CapFileError {
    /// The file could not be read.
    #[error("cannot read cap file {}: {source}", path.display())]
    Io {
        /// The cap file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The file is not UTF-8 text.
    #[error("cap file {} is not text (expected a capnp:// URI)", path.display())]
    NotText {
        /// The cap file.
        path: PathBuf,
    },
    /// The file is far longer than a URI.
    #[error("cap file {} is larger than {MAX_CAP_FILE} bytes (expected a capnp:// URI)", path.display())]
    TooLarge {
        /// The cap file.
        path: PathBuf,
    },
    /// The file holds no URI.
    #[error("cap file {} is empty (expected a capnp:// URI)", path.display())]
    Empty {
        /// The cap file.
        path: PathBuf,
    },
    /// The file holds something that is not a sturdy ref.
    #[error("cap file {} does not hold a sturdy ref: {source}", path.display())]
    Invalid {
        /// The cap file.
        path: PathBuf,
        /// Why the URI was rejected.
        source: UriError,
    },
}

/// A cap file is one URI; anything much longer is not one.
const MAX_CAP_FILE: u64 = 64 * 1024;

/// Writes `uri` and a newline to `path` (mode 0600), replacing the file
/// whole (temporary file, then rename).
pub fn save_cap_file(path: &Path, uri: &SturdyUri) -> io::Result<()> {
    let text = format!("{uri}\n");
    write_atomically(path, |w| w.write_all(text.as_bytes()))
}

/// Reads the sturdy ref in the cap file at `path` (surrounding whitespace,
/// such as the final newline, is ignored).
pub fn load_cap_file(path: &Path) -> Result<SturdyUri, CapFileError> {
    let io_error = |source| CapFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(MAX_CAP_FILE + 1).read_to_end(&mut bytes))
        .map_err(io_error)?;
    if bytes.len() as u64 > MAX_CAP_FILE {
        return Err(CapFileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| CapFileError::NotText {
        path: path.to_path_buf(),
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Err(CapFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    SturdyUri::parse(text).map_err(|source| CapFileError::Invalid {
        path: path.to_path_buf(),
        source,
    })
}

/// `e`, with `path` in its message.
fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn capnp_to_io(e: capnp::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// Makes temporary names unique within the process; the random part makes
/// them unique across processes sharing a directory.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `target` whole or not at all: `write` fills a new temporary file
/// (mode 0600) in the same directory, which is synced and renamed over the
/// target; then the directory is synced so that the rename survives a
/// crash. On failure the temporary file is removed.
fn write_atomically(
    target: &Path,
    write: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let (temp, file) = create_temp(dir)?;
    let written = (|| {
        let mut w = BufWriter::new(&file);
        write(&mut w)?;
        w.flush()?;
        drop(w);
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, target)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(at(target, e));
    }
    sync_dir(dir)
}

/// A new file in `dir` named `.tmp-…`: the leading dot keeps it apart
/// from the store's base64url names.
fn create_temp(dir: &Path) -> io::Result<(PathBuf, File)> {
    let mut attempts = 0;
    loop {
        let name = format!(
            ".tmp-{}-{}-{:016x}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u64>()
        );
        let path = dir.join(name);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        match options.open(&path) {
            Ok(file) => {
                // The mode given at creation is masked by the umask; make
                // it exactly 0600.
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    if let Err(e) = file.set_permissions(fs::Permissions::from_mode(0o600)) {
                        let _ = fs::remove_file(&path);
                        return Err(at(&path, e));
                    }
                }
                return Ok((path, file));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 8 => attempts += 1,
            Err(e) => return Err(at(&path, e)),
        }
    }
}

/// Makes the directory's entries (a rename, a removal) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| at(dir, e))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
