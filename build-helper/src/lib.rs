//! For `build.rs`: compiles your Cap'n Proto schemas with capnpc and adds,
//! to the Rust code generated for each file, the actor traits of
//! capnp-actix (a module `actors` with one trait per interface; see
//! `capnp_actix::actor`).
//!
//! ```no_run
//! // build.rs, in `fn main`:
//! capnp_actix_build::Builder::new()
//!     .src_prefix("schema")
//!     .file("schema/counter.capnp")
//!     .run()
//!     .expect("compiling schema/counter.capnp");
//! ```
//!
//! ```ignore
//! // src/main.rs
//! capnp_actix::capnp::generated_code!(pub mod counter_capnp);
//! ```
//!
//! The generated code refers to `capnp` and `actix` through capnp-actix's
//! re-exports (`::capnp_actix::capnp`, `::capnp_actix::actix`), so a crate
//! using it needs neither as a dependency of its own, and no version to
//! keep in step. It needs the Cap'n Proto compiler, `capnp`, at build time
//! (`apt-get install capnproto`, or set [`Builder::capnp_executable`]).
//!
//! How it works: capnpc compiles the schemas (and writes the raw
//! `CodeGeneratorRequest`); capnpc's code generator runs again on that
//! request with the `capnp` root set to the re-export; [`generate`] reads
//! the same request through capnp's `schema` API and writes the traits,
//! which are appended to each file. A file is rewritten only when its text
//! changes.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fs;
use std::path::{Path, PathBuf};

pub mod generate;

pub use generate::{actor_traits, actors_module, FileTraits, Options};

/// Compiles schemas into Rust, with actor traits; see the crate docs.
#[derive(Debug, Clone)]
pub struct Builder {
    files: Vec<PathBuf>,
    src_prefixes: Vec<PathBuf>,
    import_paths: Vec<PathBuf>,
    no_standard_import: bool,
    output_path: Option<PathBuf>,
    capnp_executable: Option<PathBuf>,
    capnp_root: String,
    options: Options,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// A builder with no files, writing to `OUT_DIR`, for a crate that
    /// depends on `capnp_actix`.
    pub fn new() -> Self {
        Builder {
            files: Vec::new(),
            src_prefixes: Vec::new(),
            import_paths: Vec::new(),
            no_standard_import: false,
            output_path: None,
            capnp_executable: None,
            capnp_root: "::capnp_actix::capnp".into(),
            options: Options::default(),
        }
    }

    /// Adds a schema file to compile (`cargo:rerun-if-changed` is printed
    /// for it).
    pub fn file(&mut self, path: impl AsRef<Path>) -> &mut Self {
        self.files.push(path.as_ref().to_path_buf());
        self
    }

    /// Removes `prefix` from the files' paths when naming the output:
    /// `schema/counter.capnp` with prefix `schema` gives `counter_capnp.rs`.
    pub fn src_prefix(&mut self, prefix: impl AsRef<Path>) -> &mut Self {
        self.src_prefixes.push(prefix.as_ref().to_path_buf());
        self
    }

    /// Adds a directory searched for absolute imports (`import "/foo.capnp"`).
    pub fn import_path(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.import_paths.push(dir.as_ref().to_path_buf());
        self
    }

    /// Does not search `/usr/include` and `/usr/local/include` for imports.
    pub fn no_standard_import(&mut self) -> &mut Self {
        self.no_standard_import = true;
        self
    }

    /// Writes the generated files here instead of `OUT_DIR`.
    pub fn output_path(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.output_path = Some(dir.as_ref().to_path_buf());
        self
    }

    /// The `capnp` compiler to run (default: `capnp` on `PATH`).
    pub fn capnp_executable(&mut self, path: impl AsRef<Path>) -> &mut Self {
        self.capnp_executable = Some(path.as_ref().to_path_buf());
        self
    }

    /// Where the generated modules are mounted in the crate, if not at its
    /// root (capnpc's `default_parent_module`): `["schemas"]` for
    /// `mod schemas { capnp_actix::capnp::generated_code!(pub mod foo_capnp); }`.
    pub fn parent_module(&mut self, modules: Vec<String>) -> &mut Self {
        self.options.parent_module = modules;
        self
    }

    /// The path the generated code uses for capnp-actix (default
    /// `::capnp_actix`; `crate` inside capnp-actix itself). The `capnp`
    /// root follows it (`<path>::capnp`).
    pub fn runtime_path(&mut self, path: &str) -> &mut Self {
        self.options.runtime = path.to_string();
        self.capnp_root = format!("{path}::capnp");
        self
    }

    /// Compiles the files and writes `<name>_capnp.rs` for each, with its
    /// `actors` module.
    pub fn run(&self) -> capnp::Result<()> {
        let out = match &self.output_path {
            Some(dir) => dir.clone(),
            None => std::env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or_else(|| {
                    capnp::Error::failed(
                        "OUT_DIR is not set: run from build.rs, or set Builder::output_path".into(),
                    )
                })?,
        };
        for file in &self.files {
            println!("cargo:rerun-if-changed={}", file.display());
        }
        let scratch = out.join("capnp-actix-build");
        let request_path = scratch.join("request.bin");
        let mut compile = capnpc::CompilerCommand::new();
        compile
            .output_path(scratch.join("plain"))
            .raw_code_generator_request_path(&request_path);
        if self.no_standard_import {
            compile.no_standard_import();
        }
        if let Some(capnp) = &self.capnp_executable {
            compile.capnp_executable(capnp);
        }
        for dir in &self.import_paths {
            compile.import_path(dir);
        }
        for prefix in &self.src_prefixes {
            compile.src_prefix(prefix);
        }
        for file in &self.files {
            compile.file(file);
        }
        fs::create_dir_all(scratch.join("plain")).map_err(io_error(&scratch))?;
        compile.run()?;

        // capnpc's generator again, on the same request, with the capnp
        // root set to capnp-actix's re-export.
        let rooted = scratch.join("rooted");
        let request = fs::read(&request_path).map_err(io_error(&request_path))?;
        capnpc::codegen::CodeGenerationCommand::new()
            .output_directory(&rooted)
            .default_parent_module(self.options.parent_module.clone())
            .capnp_root(&self.capnp_root)
            .run(&request[..])?;

        let message = capnp::serialize::read_message(
            &mut &request[..],
            capnp::message::ReaderOptions::new(),
        )?;
        for traits in actor_traits(&message, &self.options)? {
            let name = rust_file_name(&traits.filename);
            let mut text = fs::read_to_string(rooted.join(&name)).map_err(io_error(&name))?;
            text.push_str(&actors_module(&traits.body));
            let target = out.join(&name);
            if fs::read_to_string(&target).ok().as_deref() != Some(text.as_str()) {
                if let Some(dir) = target.parent() {
                    fs::create_dir_all(dir).map_err(io_error(dir))?;
                }
                fs::write(&target, text).map_err(io_error(&target))?;
            }
        }
        Ok(())
    }
}

/// capnpc's output file for schema `filename`: `a/b-c.capnp` gives
/// `a/b_c_capnp.rs`.
pub fn rust_file_name(filename: &str) -> PathBuf {
    let path = Path::new(filename);
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().replace('-', "_"))
        .unwrap_or_default();
    path.with_file_name(format!("{stem}_capnp.rs"))
}

/// Turns an I/O error on `path` into a capnp error naming it.
fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> capnp::Error + '_ {
    move |e| capnp::Error::failed(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::rust_file_name;
    use std::path::PathBuf;

    #[test]
    fn output_file_names_follow_capnpc() {
        assert_eq!(
            rust_file_name("counter.capnp"),
            PathBuf::from("counter_capnp.rs")
        );
        assert_eq!(
            rust_file_name("a/rpc-twoparty.capnp"),
            PathBuf::from("a/rpc_twoparty_capnp.rs")
        );
    }
}
