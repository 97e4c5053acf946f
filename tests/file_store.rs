//! SCENARIOS 62 (file store) and cap files.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use capnp::message::{Builder, HeapAllocator, ReaderSegments};
use capnp_actix::address::Address;
use capnp_actix::restorer::digest;
use capnp_actix::schemas::echo_api_capnp::saved_service;
use capnp_actix::store::{load_cap_file, save_cap_file, CapFileError, FileStore};
use capnp_actix::{SturdyUri, VatAuth};

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "capnp-actix-{what}-{}-{}-{:08x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        ));
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn saved(label: &str) -> Builder<HeapAllocator> {
    let mut message = Builder::new_default();
    message
        .init_root::<saved_service::Builder>()
        .init_logger()
        .set_label(label);
    message
}

fn label_of(message: &capnp::message::Reader<capnp::serialize::OwnedSegments>) -> String {
    message
        .get_root::<saved_service::Reader>()
        .unwrap()
        .get_logger()
        .unwrap()
        .get_label()
        .unwrap()
        .to_string()
        .unwrap()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn scenario_62_file_store_missing_digest_loads_as_nothing() {
    let tmp = TempDir::new("store-missing");
    let store = FileStore::open(&tmp.0).unwrap();
    assert!(store.load(&digest(b"never saved")).unwrap().is_none());
    // Removing what is not there is fine too.
    store.remove(&digest(b"never saved")).unwrap();
    assert!(listing(&tmp.0).is_empty());
}

#[cfg(unix)]
#[test]
fn file_store_creates_its_directory_private() {
    let tmp = TempDir::new("store-create");
    let dir = tmp.0.join("nested").join("store");
    let store = FileStore::open(&dir).unwrap();
    assert_eq!(store.dir(), dir.as_path());
    assert!(dir.is_dir());
    assert_eq!(mode(&dir), 0o700);
    // Opening an existing store is fine.
    FileStore::open(&dir).unwrap();
}

#[test]
fn scenario_62_file_store_digest_full_of_path_characters_stays_inside_the_store() {
    let tmp = TempDir::new("store-paths");
    let dir = tmp.0.join("store");
    let store = FileStore::open(&dir).unwrap();
    for hostile in [&b"!/.."[..], &b"../../etc/passwd"[..]] {
        store.save(hostile, &saved("hostile")).unwrap();
        let name = URL_SAFE_NO_PAD.encode(hostile);
        assert_eq!(listing(&dir), vec![name.clone()], "for {hostile:?}");
        assert!(name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        // Nothing escaped into the parent.
        assert_eq!(listing(&tmp.0), vec!["store".to_string()]);
        let back = store.load(hostile).unwrap().expect("saved");
        assert_eq!(label_of(&back), "hostile");
        store.remove(hostile).unwrap();
        assert!(listing(&dir).is_empty());
    }
}

#[test]
fn file_store_rejects_an_empty_digest() {
    let tmp = TempDir::new("store-empty");
    let store = FileStore::open(&tmp.0).unwrap();
    let err = store.save(b"", &saved("x")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(store.load(b"").is_err());
    assert!(listing(&tmp.0).is_empty());
}

#[test]
fn scenario_62_file_store_multi_segment_struct_round_trips() {
    let tmp = TempDir::new("store-segments");
    let store = FileStore::open(&tmp.0).unwrap();
    let label: String = (0..2000).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let mut message = Builder::new(HeapAllocator::new().first_segment_words(1));
    message
        .init_root::<saved_service::Builder>()
        .init_logger()
        .set_label(label.as_str());
    let segments = message.get_segments_for_output().len();
    assert!(segments >= 3, "only {segments} segments");

    let key = digest(b"multi");
    store.save(&key, &message).unwrap();
    let back = store.load(&key).unwrap().expect("saved");
    assert_eq!(label_of(&back), label);
    // The same segments, word for word.
    let original: Vec<Vec<u8>> = message
        .get_segments_for_output()
        .iter()
        .map(|s| s.to_vec())
        .collect();
    let back = back.into_segments();
    assert_eq!(back.len(), segments);
    let loaded: Vec<Vec<u8>> = (0..segments as u32)
        .map(|i| back.get_segment(i).unwrap().to_vec())
        .collect();
    assert_eq!(loaded, original);
}

#[test]
fn file_store_save_over_an_existing_file_replaces_it() {
    let tmp = TempDir::new("store-replace");
    let store = FileStore::open(&tmp.0).unwrap();
    let key = digest(b"service");
    store.save(&key, &saved("first")).unwrap();
    store.save(&key, &saved("second")).unwrap();
    assert_eq!(label_of(&store.load(&key).unwrap().unwrap()), "second");
    assert_eq!(listing(&tmp.0), vec![URL_SAFE_NO_PAD.encode(key)]);
    #[cfg(unix)]
    assert_eq!(mode(&tmp.0.join(URL_SAFE_NO_PAD.encode(key))), 0o600);
}

#[test]
fn file_store_remove_deletes_and_leaves_no_temp_files() {
    let tmp = TempDir::new("store-remove");
    let store = FileStore::open(&tmp.0).unwrap();
    let keys: Vec<[u8; 32]> = (0..5u8).map(|i| digest(&[i])).collect();
    for (i, key) in keys.iter().enumerate() {
        store.save(key, &saved(&format!("service {i}"))).unwrap();
    }
    let mut names: Vec<String> = keys.iter().map(|k| URL_SAFE_NO_PAD.encode(k)).collect();
    names.sort();
    assert_eq!(
        listing(&tmp.0),
        names,
        "only the saved files, no temp files"
    );

    store.remove(&keys[2]).unwrap();
    assert!(store.load(&keys[2]).unwrap().is_none());
    assert_eq!(listing(&tmp.0).len(), 4);
    assert_eq!(
        label_of(&store.load(&keys[3]).unwrap().unwrap()),
        "service 3"
    );
    for key in &keys {
        store.remove(key).unwrap();
    }
    assert!(listing(&tmp.0).is_empty());
}

#[test]
fn file_store_garbage_file_is_an_error_naming_it() {
    let tmp = TempDir::new("store-garbage");
    let store = FileStore::open(&tmp.0).unwrap();
    let key = digest(b"garbage");
    let path = tmp.0.join(URL_SAFE_NO_PAD.encode(key));
    fs::write(&path, b"\xff\xff\xff\xff not a message").unwrap();
    let Err(err) = store.load(&key) else {
        panic!("garbage loaded as a message")
    };
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

fn uri() -> SturdyUri {
    SturdyUri {
        auth: VatAuth::Sha256([7; 32]),
        address: Address::Tcp {
            host: "localhost".into(),
            port: 7000,
        },
        service_id: b"main".to_vec(),
    }
}

#[test]
fn cap_file_round_trips_with_mode_0600() {
    let tmp = TempDir::new("capfile");
    fs::create_dir_all(&tmp.0).unwrap();
    let path = tmp.0.join("service.cap");
    save_cap_file(&path, &uri()).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), format!("{}\n", uri()));
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);
    assert_eq!(load_cap_file(&path).unwrap(), uri());

    // Saving again replaces it, leaving no temp file.
    let mut other = uri();
    other.auth = VatAuth::Insecure;
    save_cap_file(&path, &other).unwrap();
    assert_eq!(load_cap_file(&path).unwrap(), other);
    assert_eq!(listing(&tmp.0), vec!["service.cap".to_string()]);
}

#[test]
fn cap_file_missing_is_an_error_naming_the_path() {
    let tmp = TempDir::new("capfile-missing");
    let path = tmp.0.join("nothing.cap");
    let err = load_cap_file(&path).unwrap_err();
    assert!(matches!(err, CapFileError::Io { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
}

#[test]
fn cap_file_garbage_is_an_error_naming_the_path() {
    let tmp = TempDir::new("capfile-garbage");
    fs::create_dir_all(&tmp.0).unwrap();
    let path = tmp.0.join("garbage.cap");
    fs::write(&path, "http://example.com/not-a-sturdy-ref\n").unwrap();
    let err = load_cap_file(&path).unwrap_err();
    assert!(matches!(err, CapFileError::Invalid { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("wrong scheme"), "{text}");

    fs::write(&path, "\n").unwrap();
    let err = load_cap_file(&path).unwrap_err();
    assert!(matches!(err, CapFileError::Empty { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()));

    fs::write(&path, b"\xff\xfe").unwrap();
    let err = load_cap_file(&path).unwrap_err();
    assert!(matches!(err, CapFileError::NotText { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()));
}

#[actix::test]
async fn saves_and_removes_off_the_arbiter_land_on_disk_like_the_blocking_ones() {
    let tmp = TempDir::new("store-off-arbiter");
    let store = FileStore::open(&tmp.0).unwrap();
    let key = digest(b"off the arbiter");
    store.save_off_arbiter(&key, &saved("first")).await.unwrap();
    store
        .save_off_arbiter(&key, &saved("second"))
        .await
        .unwrap();
    let loaded = store.load(&key).unwrap().expect("saved");
    assert_eq!(label_of(&loaded), "second");
    // Only the file itself: no temporary file is left behind.
    assert_eq!(listing(&tmp.0), vec![URL_SAFE_NO_PAD.encode(&key[..])]);
    store.remove_off_arbiter(&key).await.unwrap();
    assert!(store.load(&key).unwrap().is_none());
    assert!(listing(&tmp.0).is_empty());
    // An empty digest names no file: the error says so.
    let e = store.save_off_arbiter(&[], &saved("x")).await.unwrap_err();
    assert!(e.to_string().contains("empty digest"), "{e}");
}
