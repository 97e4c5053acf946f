//! Finds the foreign peers the interop tests run against, so that a test
//! whose peer is missing is reported as ignored (with the reason) instead
//! of passing without having run:
//!
//! - `have_pycapnp`: `python3 -c "import capnp"` succeeds
//!   (`tests/interop_pycapnp.rs`);
//! - `have_cpp_capnp`: `g++`, the `capnp` compiler and `pkg-config
//!   capnp-rpc` are all there (`tests/interop_cpp.rs`).
//!
//! `CAPNP_ACTIX_REQUIRE_PYCAPNP` / `CAPNP_ACTIX_REQUIRE_CPP` (CI sets both)
//! turn the cfg on whatever the probe says, so that a missing peer fails
//! those tests rather than skipping them. The probe reruns when either
//! variable or `PATH` changes; after installing a peer otherwise, `touch
//! build.rs` to have it probed again.

use std::process::{Command, Stdio};

const PEERS: [(&str, &str); 2] = [
    ("have_pycapnp", "CAPNP_ACTIX_REQUIRE_PYCAPNP"),
    ("have_cpp_capnp", "CAPNP_ACTIX_REQUIRE_CPP"),
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    for (cfg, require) in PEERS {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        println!("cargo::rerun-if-env-changed={require}");
        let required = std::env::var_os(require).is_some_and(|v| !v.is_empty());
        if required || found(cfg) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}

/// Whether the peer behind `cfg` is installed.
fn found(cfg: &str) -> bool {
    match cfg {
        "have_pycapnp" => succeeds("python3", &["-c", "import capnp"]),
        "have_cpp_capnp" => {
            succeeds("g++", &["--version"])
                && succeeds("capnp", &["--version"])
                && succeeds("pkg-config", &["--exists", "capnp-rpc"])
        }
        _ => unreachable!("unknown peer {cfg}"),
    }
}

/// True when `program args` runs and exits with success.
fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
