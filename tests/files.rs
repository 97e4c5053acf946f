//! The `files` example's service (`examples/common/files_service.rs`) and
//! command line: round trips of a few MiB, names checked as files.capnp
//! says (traversal refused), and a sink released before `end` leaving
//! nothing behind. In-process scenarios end with nothing alive.

#[path = "../examples/common/files_service.rs"]
mod files_service;

mod examples_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use capnp_actix::schemas::files_capnp::{byte_sink, files};
use capnp_actix::Cap;
use files_service::{end_sink, send_file, summarize_file, FileSink, FilesService, Summary};

fn host_sink(sink: FileSink) -> byte_sink::Client {
    Cap::<byte_sink::Client>::new(sink).client()
}

/// A fresh directory holding `served/` (the service's) and `outside/`.
fn dirs(tag: &str) -> examples_support::TempDir {
    let dir = examples_support::TempDir::new(tag);
    std::fs::create_dir_all(dir.path().join("served")).unwrap();
    std::fs::create_dir_all(dir.path().join("outside")).unwrap();
    dir
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Deterministic bytes that are not all alike.
fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

async fn released() {
    capnp_actix::debug::wait_all_released(Duration::from_secs(5))
        .await
        .unwrap_or_else(|report| panic!("still alive:\n{report}"));
}

async fn upload(
    service: &files::Client,
    name: &str,
    bytes: &[u8],
) -> Result<Summary, capnp::Error> {
    let mut request = service.upload_request();
    request.get().set_name(name);
    let sink = request.send().pipeline.get_sink();
    let sent = send_file(bytes, &sink, |_| {}).await?;
    let ended = end_sink(&sink).await?;
    assert_eq!(ended, sent);
    Ok(ended)
}

async fn stat(service: &files::Client, name: &str) -> Result<Summary, capnp::Error> {
    let mut request = service.stat_request();
    request.get().set_name(name);
    let response = request.send().promise.await?;
    let stat = response.get()?;
    Summary::read(stat.get_size(), stat.get_sha256()?)
}

#[actix::test]
async fn upload_stat_and_download_a_few_mib_in_process() {
    let dir = dirs("files-round-trip");
    let served = dir.path().join("served");
    {
        let service = Cap::<files::Client>::new(FilesService::new(&served, host_sink)).client();
        let bytes = content(3 * 1024 * 1024 + 17);
        let up = upload(&service, "data.bin", &bytes).await.unwrap();
        assert_eq!(up.size, bytes.len() as u64);
        assert_eq!(entries(&served), ["data.bin"]);
        assert_eq!(std::fs::read(served.join("data.bin")).unwrap(), bytes);
        assert_eq!(stat(&service, "data.bin").await.unwrap(), up);

        let local = dir.path().join("outside/copy.bin");
        let mut request = service.download_request();
        request.get().set_name("data.bin");
        request
            .get()
            .set_sink(host_sink(FileSink::create(&local).unwrap()));
        let response = request.send().promise.await.unwrap();
        let reported = response.get().unwrap();
        let reported = Summary::read(reported.get_size(), reported.get_sha256().unwrap()).unwrap();
        assert_eq!(reported, up);
        assert_eq!(summarize_file(&local).unwrap(), up);
        assert_eq!(entries(&dir.path().join("outside")), ["copy.bin"]);
    }
    released().await;
}

#[actix::test]
async fn names_are_checked_as_the_schema_says_and_traversal_is_refused() {
    let dir = dirs("files-names");
    let served = dir.path().join("served");
    {
        let service = Cap::<files::Client>::new(FilesService::new(&served, host_sink)).client();
        std::fs::write(dir.path().join("outside/secret"), b"secret").unwrap();
        let long = "x".repeat(256);
        let bad: [(&str, &str); 8] = [
            ("", "is empty"),
            (".", "is not a file name"),
            ("..", "is not a file name"),
            ("../outside/secret", "contains '/'"),
            ("/etc/passwd", "contains '/'"),
            ("a/b", "contains '/'"),
            ("a\0b", "contains NUL"),
            (&long, "is 256 bytes long"),
        ];
        for (name, problem) in bad {
            for e in [
                upload(&service, name, b"x").await.unwrap_err(),
                stat(&service, name).await.unwrap_err(),
            ] {
                assert!(e.to_string().contains(problem), "{name:?}: {e}");
            }
        }
        // Nothing was written anywhere, and the file outside is untouched.
        assert!(entries(&served).is_empty());
        assert_eq!(entries(&dir.path().join("outside")), ["secret"]);
        // 255 bytes, dots and backslashes are fine.
        let longest = "é".repeat(127) + "x";
        assert_eq!(longest.len(), 255);
        for name in [longest.as_str(), "...", ".hidden", "a\\b"] {
            upload(&service, name, b"ok").await.unwrap();
        }
        assert_eq!(entries(&served).len(), 4);
    }
    released().await;
}

#[actix::test]
async fn a_sink_released_before_end_leaves_nothing_behind() {
    let dir = dirs("files-dropped");
    let served = dir.path().join("served");
    {
        let service = Cap::<files::Client>::new(FilesService::new(&served, host_sink)).client();
        let mut request = service.upload_request();
        request.get().set_name("partial");
        let sink = request.send().pipeline.get_sink();
        send_file(&content(200_000)[..], &sink, |_| {})
            .await
            .unwrap();
        // The temporary file exists while the sink does.
        sink.client.when_resolved().await.unwrap();
        assert_eq!(entries(&served).len(), 1, "{:?}", entries(&served));
        assert!(entries(&served)[0].ends_with(".part"));
        drop(sink);
    }
    released().await;
    assert!(entries(&served).is_empty(), "{:?}", entries(&served));
}

/// `files serve`, then `upload`, `stat`, `download` as processes.
#[test]
fn the_files_command_line_round_trips_a_file() {
    use examples_support::{run_example, Server};
    let dir = dirs("files-cli");
    let served = dir.path().join("served");
    let socket = dir.path().join("files.sock");
    let listen = format!("unix:{}", socket.display());
    let server = Server::start(
        "files",
        &[
            "serve",
            "--dir",
            served.to_str().unwrap(),
            "--capnp-listen-address",
            &listen,
            "--capnp-disable-tls",
        ],
        "files service running at: ",
    );
    let uri = server.uri.clone();
    let local: PathBuf = dir.path().join("outside/local.bin");
    let bytes = content(2 * 1024 * 1024 + 5);
    std::fs::write(&local, &bytes).unwrap();
    let expected = summarize_file(&local).unwrap();
    let lines = [expected.size.to_string(), expected.hex()];

    let up = run_example("files", &["upload", &uri, local.to_str().unwrap(), "big"]);
    assert!(up.status.success(), "{up}");
    assert_eq!(up.lines(), lines, "{up}");
    let st = run_example("files", &["stat", &uri, "big"]);
    assert!(st.status.success(), "{st}");
    assert_eq!(st.lines(), lines, "{st}");
    let copy = dir.path().join("outside/copy.bin");
    let down = run_example("files", &["download", &uri, "big", copy.to_str().unwrap()]);
    assert!(down.status.success(), "{down}");
    assert_eq!(down.lines(), lines, "{down}");
    assert_eq!(std::fs::read(&copy).unwrap(), bytes);

    let bad = run_example(
        "files",
        &["upload", &uri, local.to_str().unwrap(), "../escape"],
    );
    assert_eq!(examples_support::exit_code(&bad), Some(1), "{bad}");
    assert!(bad.stderr.contains("contains '/'"), "{bad}");
    let missing = run_example("files", &["stat", &uri, "nothing-here"]);
    assert_eq!(examples_support::exit_code(&missing), Some(1), "{missing}");
    assert!(missing.stderr.contains("\"nothing-here\""), "{missing}");
    assert_eq!(entries(&served), ["big"]);
}
