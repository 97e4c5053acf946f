//! Scenarios 63 and 64: sturdy URIs in all their forms, and the vat's
//! command-line options with every error message.

use std::path::PathBuf;
use std::str::FromStr;

use capnp_actix::identity::generated_service_id;
use capnp_actix::{Address, ConfigError, SecretKey, SturdyUri, VatAuth, VatConfig};
use clap::Parser;

/// A program's command line with the vat's options flattened in.
#[derive(Parser, Debug)]
#[command(name = "calc-server")]
struct Cli {
    #[command(flatten)]
    vat: VatConfig,
    /// An option of the program's own, to show the two mix.
    #[arg(long)]
    verbose: bool,
}

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("calc-server").chain(args.iter().copied()))
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

/// A fresh directory under the system temporary directory.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "capnp-actix-config-cli-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const FP: &str = "RNISpLVyClVyxi62pJcuioCPQRosJIA-2PUt1EtSTEk";

// Scenario 63 ---------------------------------------------------------------

#[test]
fn scenario_63_sturdy_uris_round_trip_in_all_four_forms() {
    for text in [
        "capnp://insecure@127.0.0.1:7000/bWFpbg".to_string(),
        format!("capnp://sha-256:{FP}@calc.example.com:7000/bWFpbg"),
        "capnp://insecure@/tmp/calc.socket/bWFpbg".to_string(),
        format!("capnp://sha-256:{FP}@/run/vat/calc.socket/bWFpbg"),
        "capnp://insecure@[::1]:7000/bWFpbg".to_string(),
        "capnp://insecure@/tmp/calc.socket/".to_string(),
    ] {
        let uri = SturdyUri::from_str(&text).unwrap();
        assert_eq!(uri.to_string(), text);
        assert_eq!(SturdyUri::from_str(&uri.to_string()).unwrap(), uri);
    }
}

#[test]
fn scenario_63_empty_service_id_on_a_unix_socket_keeps_its_trailing_slash() {
    let uri = SturdyUri::from_str("capnp://insecure@/tmp/calc.socket/").unwrap();
    assert_eq!(uri.auth, VatAuth::Insecure);
    assert_eq!(uri.address, Address::Unix("/tmp/calc.socket".into()));
    assert!(uri.service_id.is_empty());
    assert_eq!(uri.to_string(), "capnp://insecure@/tmp/calc.socket/");
}

#[test]
fn scenario_63_service_ids_are_base64url_without_padding() {
    let uri = SturdyUri {
        auth: VatAuth::Sha256(FP.parse::<capnp_actix::Fingerprint>().unwrap().0),
        address: addr("tcp:calc.example.com:7000"),
        service_id: b"main".to_vec(),
    };
    assert_eq!(
        uri.to_string(),
        format!("capnp://sha-256:{FP}@calc.example.com:7000/bWFpbg")
    );
    let parsed = SturdyUri::from_str(&uri.to_string()).unwrap();
    assert_eq!(parsed.service_id, b"main");
    assert_eq!(parsed, uri);
}

#[test]
fn scenario_63_uris_made_by_the_config_parse_back_equal() {
    let key = SecretKey::ephemeral();
    let secret = generated_service_id();
    let derived = key.derived_id(b"main");
    for tls in [false, true] {
        for address in [
            "tcp:127.0.0.1:7000",
            "tcp:[::1]:7000",
            "unix:/tmp/calc.socket",
        ] {
            let vat = VatConfig::new()
                .with_secret_key(key.clone())
                .with_tls(tls)
                .with_listen_address(addr(address));
            assert_eq!(vat.derived_id("main").unwrap(), derived);
            for id in [&b"main"[..], b"", &secret, &derived] {
                let uri = vat.sturdy_uri(id).unwrap();
                let text = uri.to_string();
                let want_auth = if tls {
                    format!("capnp://sha-256:{}@", key.fingerprint())
                } else {
                    "capnp://insecure@".to_string()
                };
                assert!(text.starts_with(&want_auth), "{text}");
                let back = SturdyUri::from_str(&text).unwrap();
                assert_eq!(back, uri, "{text}");
                assert_eq!(back.service_id, id);
                assert_eq!(back.address, addr(address));
            }
        }
    }
}

// Scenario 64 ---------------------------------------------------------------

#[test]
fn scenario_64_all_four_options_parse() {
    let dir = TempDir::new("options");
    let key_file = dir.0.join("vat.pem");
    let cli = parse(&[
        "--capnp-secret-key-file",
        key_file.to_str().unwrap(),
        "--capnp-listen-address",
        "tcp:[::]:7000",
        "--capnp-public-address",
        "tcp:calc.example.com:7000",
        "--capnp-disable-tls",
        "--verbose",
    ])
    .unwrap();
    assert!(cli.verbose);
    let vat = &cli.vat;
    assert_eq!(vat.secret_key_file.as_deref(), Some(key_file.as_path()));
    assert_eq!(vat.listen_address, Some(addr("tcp:[::]:7000")));
    assert_eq!(vat.public_address, Some(addr("tcp:calc.example.com:7000")));
    assert_eq!(
        vat.public_address(),
        Some(&addr("tcp:calc.example.com:7000"))
    );
    assert!(vat.disable_tls);
    assert!(!vat.tls());
    assert_eq!(
        vat.sturdy_uri(b"main").unwrap().to_string(),
        "capnp://insecure@calc.example.com:7000/bWFpbg"
    );
}

#[test]
fn scenario_64_defaults_are_tls_an_ephemeral_key_and_public_equals_listen() {
    let cli = parse(&["--capnp-listen-address", "unix:/tmp/calc.socket"]).unwrap();
    let vat = &cli.vat;
    assert_eq!(vat.secret_key_file, None);
    assert_eq!(vat.public_address, None);
    assert_eq!(vat.public_address(), Some(&addr("unix:/tmp/calc.socket")));
    assert!(vat.tls());
    let key = vat.secret_key().unwrap();
    assert_eq!(vat.secret_key().unwrap().fingerprint(), key.fingerprint());
    assert_eq!(vat.auth().unwrap(), VatAuth::Sha256(key.fingerprint().0));
    let uri = vat.sturdy_uri(b"").unwrap().to_string();
    assert_eq!(
        uri,
        format!("capnp://sha-256:{}@/tmp/calc.socket/", key.fingerprint())
    );

    let none = parse(&[]).unwrap().vat;
    assert_eq!(none.listen_address, None);
    assert_eq!(none.public_address(), None);
    assert!(none.tls());
    let e = none.sturdy_uri(b"main").unwrap_err();
    assert!(matches!(e, ConfigError::NoAddress));
    assert_eq!(
        e.to_string(),
        "no --capnp-listen-address or --capnp-public-address: \
         the vat has no address to put in sturdy URIs"
    );
}

#[test]
fn scenario_64_an_empty_key_file_means_an_ephemeral_key() {
    let cli = parse(&["--capnp-secret-key-file", ""]).unwrap();
    assert_eq!(cli.vat.secret_key_file, Some(PathBuf::new()));
    let key = cli.vat.secret_key().unwrap();
    assert_eq!(
        cli.vat.secret_key().unwrap().fingerprint(),
        key.fingerprint()
    );
    // Also as `--opt=`.
    let cli = parse(&["--capnp-secret-key-file="]).unwrap();
    assert_eq!(cli.vat.secret_key_file, Some(PathBuf::new()));
    assert!(cli.vat.secret_key().is_ok());
}

#[test]
fn scenario_64_the_key_file_is_created_then_read_once() {
    let dir = TempDir::new("keyfile");
    let key_file = dir.0.join("vat.pem");
    let cli = parse(&["--capnp-secret-key-file", key_file.to_str().unwrap()]).unwrap();
    let vat = cli.vat;
    let key = vat.secret_key().unwrap();
    let text = std::fs::read(&key_file).unwrap();
    assert!(text.starts_with(b"-----BEGIN PRIVATE KEY-----"));
    assert_eq!(key.pem(), &text[..]);
    // Kept: removing the file changes nothing for this configuration.
    std::fs::remove_file(&key_file).unwrap();
    assert_eq!(vat.secret_key().unwrap().fingerprint(), key.fingerprint());
    assert_eq!(vat.auth().unwrap(), VatAuth::Sha256(key.fingerprint().0));
    assert_eq!(vat.derived_id("main").unwrap(), key.derived_id(b"main"));
    // A new configuration on the same (restored) file gets the same key.
    std::fs::write(&key_file, &text).unwrap();
    let again = VatConfig::new().with_secret_key_file(&key_file);
    assert_eq!(again.secret_key().unwrap().fingerprint(), key.fingerprint());
    assert_eq!(again.derived_id("main").unwrap(), key.derived_id(b"main"));
}

#[test]
fn scenario_64_address_errors_come_through_clap_with_their_messages() {
    for option in ["--capnp-listen-address", "--capnp-public-address"] {
        for (input, want) in [
            (
                "tcp:localhost",
                "is missing a port (expected tcp:HOST:PORT)",
            ),
            ("tcp:localhost:http", "has an invalid port \"http\""),
            ("tcp:localhost:99999", "has an invalid port \"99999\""),
            (
                "localhost",
                "is missing ':' (expected tcp:HOST:PORT or unix:PATH)",
            ),
            (
                "udp:localhost:7000",
                "Only tcp:HOST:PORT and unix:PATH addresses are supported",
            ),
        ] {
            let e = parse(&[option, input]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
            let text = e.to_string();
            assert!(text.contains(want), "{option} {input}: {text}");
            assert!(text.contains(option), "{option} {input}: {text}");
            assert!(text.contains(input), "{option} {input}: {text}");
        }
    }
}

#[test]
fn scenario_64_sturdy_uri_errors_say_what_is_wrong() {
    for (input, want) in [
        (
            "http://insecure@localhost:7000/bWFpbg",
            "wrong scheme (a sturdy ref starts with capnp://)",
        ),
        ("capnp://insecure@localhost/bWFpbg", "missing port"),
        (
            "capnp://localhost:7000/bWFpbg",
            "missing digest hash type (expected sha-256:FINGERPRINT@ or insecure@)",
        ),
        (
            "capnp://sha-256@localhost:7000/bWFpbg",
            "missing digest value after sha-256:",
        ),
        (
            "capnp://sha-256:@localhost:7000/bWFpbg",
            "missing digest value after sha-256:",
        ),
        (
            "capnp://md5:abcd@localhost:7000/bWFpbg",
            "unknown hash type \"md5\" (only sha-256 is supported)",
        ),
    ] {
        let e = SturdyUri::from_str(input).unwrap_err().to_string();
        assert!(e.contains(want), "{input}: {e}");
    }
}

#[test]
fn scenario_64_an_unreadable_key_file_names_the_path() {
    let dir = TempDir::new("unreadable");
    // A directory where the key file should be.
    let cli = parse(&["--capnp-secret-key-file", dir.0.to_str().unwrap()]).unwrap();
    let e = cli.vat.secret_key().unwrap_err().to_string();
    assert!(e.contains("cannot read secret key file"), "{e}");
    assert!(e.contains(dir.0.to_str().unwrap()), "{e}");
    // Everything that needs the key reports the same.
    let e = cli.vat.auth().unwrap_err().to_string();
    assert!(e.contains(dir.0.to_str().unwrap()), "{e}");

    // A file that holds no key.
    let junk = dir.0.join("junk.pem");
    std::fs::write(&junk, "not a key\n").unwrap();
    let cli = parse(&["--capnp-secret-key-file", junk.to_str().unwrap()]).unwrap();
    let e = cli.vat.derived_id("main").unwrap_err().to_string();
    assert!(e.contains(junk.to_str().unwrap()), "{e}");
    assert!(e.contains("no PEM private key found"), "{e}");

    // A key file whose directory does not exist: cannot be created.
    let nowhere = dir.0.join("no-such-dir").join("vat.pem");
    let cli = parse(&["--capnp-secret-key-file", nowhere.to_str().unwrap()]).unwrap();
    let e = cli.vat.secret_key().unwrap_err().to_string();
    assert!(e.contains("cannot create secret key file"), "{e}");
    assert!(e.contains(nowhere.to_str().unwrap()), "{e}");
}

#[test]
fn scenario_64_help_lists_the_four_options() {
    let e = parse(&["--help"]).unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
    let help = e.to_string();
    for option in [
        "--capnp-secret-key-file <PATH>",
        "--capnp-listen-address <ADDR>",
        "--capnp-public-address <ADDR>",
        "--capnp-disable-tls",
    ] {
        assert!(help.contains(option), "{help}");
    }
    assert!(help.contains("\"\" means an ephemeral key"), "{help}");
    assert!(
        help.contains("tcp:HOST:PORT, tcp:[IPv6]:PORT or unix:PATH"),
        "{help}"
    );
    // The short help lines, not the rustdoc text.
    assert!(!help.contains('`'), "{help}");
}

#[test]
fn the_reference_s_older_spellings_are_accepted() {
    let dir = TempDir::new("aliases");
    let key_file = dir.0.join("vat.pem");
    let key_arg = key_file.to_str().unwrap();
    let cli = parse(&[
        "--secret-key-file",
        key_arg,
        "--listen-address",
        "tcp:0.0.0.0:7000",
        "--public-address",
        "tcp:calc.example.com:7000",
        "--disable-tls",
    ])
    .unwrap();
    let old = cli.vat;
    let cli = parse(&[
        "--capnp-secret-key-file",
        key_arg,
        "--capnp-listen-address",
        "tcp:0.0.0.0:7000",
        "--capnp-public-address",
        "tcp:calc.example.com:7000",
        "--capnp-disable-tls",
    ])
    .unwrap();
    let new = cli.vat;
    assert_eq!(old.secret_key_file, Some(key_file.clone()));
    assert_eq!(old.secret_key_file, new.secret_key_file);
    assert_eq!(old.listen_address, Some(addr("tcp:0.0.0.0:7000")));
    assert_eq!(old.listen_address, new.listen_address);
    assert_eq!(old.public_address, Some(addr("tcp:calc.example.com:7000")));
    assert_eq!(old.public_address, new.public_address);
    assert!(old.disable_tls && new.disable_tls);
    // `--opt=value` works for the old spellings too.
    let listen = format!("--listen-address=unix:{}", dir.0.join("s").display());
    let cli = parse(&[&listen]).unwrap();
    assert_eq!(cli.vat.listen_address, Some(Address::Unix(dir.0.join("s"))));
    // Giving one option under both spellings is an error, as giving it twice.
    let e = parse(&[
        "--listen-address",
        "tcp:0.0.0.0:1",
        "--capnp-listen-address",
        "tcp:0.0.0.0:2",
    ])
    .unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict, "{e}");
}
