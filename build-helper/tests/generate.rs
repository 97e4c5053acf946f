//! The actor traits generated for schemas that use what the tutorial's do
//! not: nested interfaces, Rust keywords as method names, generic
//! interfaces, streaming methods, and a declaration that would clash with the `actors`
//! module. (The traits of `echo_api.capnp` and `test_api.capnp`, with an
//! interface that extends another, are compiled and run by capnp-actix's
//! `tests/actor_handlers.rs`; the template's by its own test.) Needs the
//! `capnp` compiler.

use std::path::PathBuf;

/// A fresh directory under the system's temp dir.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("capnp-actix-build-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// Compiles `schema` (a file `test.capnp`) and returns the generated file,
/// or the build's error.
fn generate(name: &str, schema: &str) -> Result<String, String> {
    let dir = scratch(name);
    let file = dir.join("test.capnp");
    std::fs::write(&file, schema).expect("writing the schema");
    let mut builder = capnp_actix_build::Builder::new();
    // Streaming needs the standard `/capnp/stream.capnp`.
    if !schema.contains("stream") {
        builder.no_standard_import();
    }
    let result = builder
        .src_prefix(&dir)
        .file(&file)
        .output_path(dir.join("out"))
        .run()
        .map_err(|e| e.to_string())
        .and_then(|()| {
            std::fs::read_to_string(dir.join("out/test_capnp.rs")).map_err(|e| e.to_string())
        });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[test]
fn nested_interfaces_and_keyword_methods_follow_capnpcs_names() {
    let code = generate(
        "nested",
        "@0xd2a5c1b7e3f40911;\n\
         struct Outer {\n\
           interface Inner { type @0 (inMatch :Text) -> (selfValue :Int32); }\n\
         }\n",
    )
    .unwrap();
    // capnpc's own code, through the re-export.
    assert!(
        code.contains("::capnp_actix::capnp::capability::Params<"),
        "{code}"
    );
    assert!(!code.contains(" ::capnp::"), "{code}");
    // The trait: named after the scopes, in the file's `actors` module.
    assert!(code.contains("\npub mod actors {\n"), "{code}");
    assert!(
        code.contains(
            "pub trait OuterInner: ::capnp_actix::actix::Actor<Context = ::capnp_actix::actix::Context<Self>> {"
        ),
        "{code}"
    );
    // `type` is a keyword: capnpc's method is `type_`, and so is ours;
    // its params live in capnpc's module for the interface.
    assert!(
        code.contains("fn type_(&mut self, params: super::outer::inner::TypeParams, results: super::outer::inner::TypeResults,"),
        "{code}"
    );
    assert!(
        code.contains("0 => <Self as OuterInner>::type_(actor,"),
        "{code}"
    );
    // Errors name the interface as the schema does.
    assert!(
        code.contains("unimplemented(\"Outer.Inner\", \"type\")"),
        "{code}"
    );
}

#[test]
fn generic_interfaces_get_no_trait() {
    let code = generate(
        "generic",
        "@0xd2a5c1b7e3f40912;\n\
         interface Store(T) { get @0 () -> (value :T); }\n\
         interface Plain { get @0 () -> (); }\n",
    )
    .unwrap();
    assert!(code.contains("// `test.capnp:Store` is generic"), "{code}");
    assert!(!code.contains("pub trait Store"), "{code}");
    assert!(code.contains("pub trait Plain"), "{code}");
}

#[test]
fn a_declaration_named_like_the_actors_module_is_refused() {
    let e = generate(
        "clash",
        "@0xd2a5c1b7e3f40913;\n\
         struct Actors { x @0 :Int32; }\n",
    )
    .unwrap_err();
    assert!(e.contains("`actors`") && e.contains("rename it"), "{e}");
}

#[test]
fn streaming_methods_get_params_only() {
    let code = generate(
        "stream",
        "@0xd2a5c1b7e3f40914;\n\
         interface Sink { write @0 (data :Data) -> stream; done @1 () -> (); }\n",
    )
    .unwrap();
    assert!(
        code.contains("fn write(&mut self, params: super::sink::WriteParams, ctx:"),
        "{code}"
    );
    assert!(
        code.contains("0 => <Self as Sink>::write(actor, ::capnp_actix::capnp::private::capability::internal_get_typed_params({ drop(results); params }), ctx),"),
        "{code}"
    );
    assert!(code.contains("fn done(&mut self, params: super::sink::DoneParams, results: super::sink::DoneResults,"), "{code}");
}
