//! The actor traits: from a `CodeGeneratorRequest` (what `capnp compile`
//! hands a plugin), one trait per interface of each requested file, written
//! as the body of that file's `actors` module.
//!
//! Names and paths follow capnpc's: the interface's module is the one
//! capnpc's `GeneratorContext` gives it (so `$Rust.name` annotations are
//! honoured), a method `getLogger` is `get_logger` with params
//! `GetLoggerParams` and results `GetLoggerResults` in that module. The
//! trait is named after the interface's name in the schema, the names of
//! the scopes it is nested in first (`Outer.Inner` gives `OuterInner`).
//!
//! Generic interfaces, and methods with type parameters of their own, are
//! not supported: the former get no trait, the latter no trait method (a
//! call fails with Unimplemented); the generated code says so.

use std::fmt::Write;

use capnp::schema_capnp::node;
use capnpc::codegen::GeneratorContext;

/// The result type of a streaming method (`-> stream`), in `stream.capnp`.
const STREAM_RESULT_ID: u64 = 0x995f_9a33_77c0_b16e;

/// Rust keywords capnpc suffixes with `_` when it makes a name of one.
const RUST_KEYWORDS: &[&str] = &[
    "abstract", "alignof", "as", "be", "become", "box", "break", "const", "continue", "crate",
    "do", "else", "enum", "extern", "false", "final", "fn", "for", "if", "impl", "in", "let",
    "loop", "macro", "match", "mod", "move", "mut", "offsetof", "once", "override", "priv", "proc",
    "pub", "pure", "ref", "return", "self", "sizeof", "static", "struct", "super", "trait", "true",
    "type", "typeof", "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

/// The module the traits of a file live in, inside the file's module.
pub const ACTORS_MODULE: &str = "actors";

/// How the generated code refers to the things around it.
#[derive(Clone, Debug)]
pub struct Options {
    /// The path of the capnp-actix crate (`::capnp_actix` for users,
    /// `crate` inside capnp-actix itself).
    pub runtime: String,
    /// Where the user mounts the generated files (capnpc's
    /// `default_parent_module`), for traits of interfaces in other files.
    pub parent_module: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            runtime: "::capnp_actix".into(),
            parent_module: Vec::new(),
        }
    }
}

/// The actor traits of one requested file.
#[derive(Clone, Debug)]
pub struct FileTraits {
    /// The file's name as the compiler was given it (relative to the source
    /// prefix), such as `counter.capnp`.
    pub filename: String,
    /// The body of the file's `actors` module.
    pub body: String,
}

/// The actor traits of every file `message` (a `CodeGeneratorRequest`)
/// asks code for.
pub fn actor_traits(
    message: &capnp::message::Reader<capnp::serialize::OwnedSegments>,
    options: &Options,
) -> capnp::Result<Vec<FileTraits>> {
    let ctx = GeneratorContext::new(message)?;
    let mut files = Vec::new();
    for file in ctx.request.get_requested_files()? {
        let filename = file.get_filename()?.to_string()?;
        let file_scope = scope(&ctx, file.get_id())?;
        let mut body = String::new();
        for id in nested_ids(&ctx, file.get_id())? {
            let node = ctx.node_map[&id];
            if scope(&ctx, id)?.len() == file_scope.len() + 1
                && scope(&ctx, id)?.last().map(String::as_str) == Some(ACTORS_MODULE)
            {
                return Err(capnp::Error::failed(format!(
                    "{filename}: a declaration named like the module `{ACTORS_MODULE}` that \
                     capnp-actix-build adds for the actor traits; rename it (or give it a \
                     `$Rust.name`)"
                )));
            }
            if let Ok(node::Interface(_)) = node.which() {
                interface_trait(&ctx, options, file_scope.len(), id, &mut body)?;
            }
        }
        files.push(FileTraits { filename, body });
    }
    Ok(files)
}

/// Every node nested in `id`, depth first, in declaration order.
fn nested_ids(ctx: &GeneratorContext<'_>, id: u64) -> capnp::Result<Vec<u64>> {
    let mut found = Vec::new();
    let Some(node) = ctx.node_map.get(&id) else {
        return Ok(found);
    };
    for nested in node.get_nested_nodes()? {
        let nested_id = nested.get_id();
        if ctx.node_map.contains_key(&nested_id) {
            found.push(nested_id);
            found.extend(nested_ids(ctx, nested_id)?);
        }
    }
    Ok(found)
}

/// capnpc's module path of node `id` (`["crate", "foo_capnp", "echo"]`).
fn scope<'c>(ctx: &'c GeneratorContext<'_>, id: u64) -> capnp::Result<&'c Vec<String>> {
    ctx.scope_map
        .get(&id)
        .ok_or_else(|| capnp::Error::failed(format!("node {id:#x} has no scope")))
}

/// The trait's name: the interface's name and its scopes', joined.
fn trait_name(node: node::Reader<'_>) -> capnp::Result<String> {
    let display = node.get_display_name()?.to_str()?;
    let local = display.split_once(':').map_or(display, |(_, name)| name);
    Ok(local.split('.').collect())
}

/// The file node that node `id` is declared in.
fn file_of(ctx: &GeneratorContext<'_>, id: u64) -> u64 {
    let mut file = id;
    while let Some(parent) = ctx.node_map.get(&file).map(|n| n.get_scope_id()) {
        if parent == 0 {
            break;
        }
        file = parent;
    }
    file
}

/// The path of the trait of interface `id` (a superclass, perhaps in
/// another file), seen from the `actors` module of file `from_file`.
fn trait_path(
    ctx: &GeneratorContext<'_>,
    options: &Options,
    from_file: u64,
    id: u64,
) -> capnp::Result<String> {
    let node = ctx.node_map[&id];
    let name = trait_name(node)?;
    let file = file_of(ctx, id);
    if file == from_file {
        return Ok(name);
    }
    let file_scope = scope(ctx, file)?;
    let mut path = vec!["crate".to_string()];
    path.extend(options.parent_module.iter().cloned());
    path.extend(file_scope.iter().skip(1).cloned());
    Ok(format!("{}::{ACTORS_MODULE}::{name}", path.join("::")))
}

/// capnpc's name for a method (snake case, keywords suffixed with `_`).
fn method_fn(name: &str) -> String {
    let mut snake = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
    }
    if RUST_KEYWORDS.contains(&snake.as_str()) {
        snake.push('_');
    }
    snake
}

/// capnpc's prefix of a method's `Params`/`Results` aliases.
fn alias_prefix(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// One method of an interface, as its trait method needs it.
struct Method {
    name: String,
    ordinal: u16,
    fn_name: String,
    streaming: bool,
    /// Methods with type parameters of their own get no trait method.
    supported: bool,
}

/// Writes the trait of interface `id` to `out`.
fn interface_trait(
    ctx: &GeneratorContext<'_>,
    options: &Options,
    file_depth: usize,
    id: u64,
    out: &mut String,
) -> capnp::Result<()> {
    let node = ctx.node_map[&id];
    let node::Interface(interface) = node.which()? else {
        return Ok(());
    };
    let name = trait_name(node)?;
    let display = node.get_display_name()?.to_str()?;
    // The name errors use: as the schema spells it (`Outer.Inner`).
    let schema_name = display.split_once(':').map_or(display, |(_, n)| n);
    if node.get_is_generic() {
        let _ = writeln!(
            out,
            "// `{display}` is generic: capnp-actix-build makes no actor trait for it.\n"
        );
        return Ok(());
    }
    let module = format!("super::{}", scope(ctx, id)?[file_depth..].join("::"));
    let rt = &options.runtime;
    let mut methods = Vec::new();
    for (ordinal, method) in interface.get_methods()?.into_iter().enumerate() {
        let method_name = method.get_name()?.to_string()?;
        methods.push(Method {
            fn_name: method_fn(&method_name),
            name: method_name,
            ordinal: u16::try_from(ordinal)
                .map_err(|_| capnp::Error::failed("too many methods".into()))?,
            streaming: method.get_result_struct_type() == STREAM_RESULT_ID,
            supported: method.get_implicit_parameters()?.is_empty(),
        });
    }
    let file_id = file_of(ctx, id);
    let mut supers = Vec::new();
    for superclass in interface.get_superclasses()? {
        supers.push(trait_path(ctx, options, file_id, superclass.get_id())?);
    }

    let bounds = std::iter::once(format!(
        "{rt}::actix::Actor<Context = {rt}::actix::Context<Self>>"
    ))
    .chain(supers.iter().cloned())
    .collect::<Vec<_>>()
    .join(" + ");
    let _ = writeln!(
        out,
        "/// The methods of `{display}` (interface `{id:#018x}`), implemented by an actix\n\
         /// actor: implement the ones it serves (the others fail with Unimplemented),\n\
         /// then list this trait in `serve_actor!` and make the capability with\n\
         /// `Cap::from_actor`.\n\
         pub trait {name}: {bounds} {{"
    );
    for m in &methods {
        method_decl(&module, rt, schema_name, m, out);
    }
    route_fn(rt, &name, schema_name, id, &methods, &supers, out);
    out.push_str("}\n\n");
    Ok(())
}

/// Writes one trait method, with its default body (Unimplemented).
fn method_decl(module: &str, rt: &str, interface: &str, m: &Method, out: &mut String) {
    let Method {
        name,
        ordinal,
        fn_name,
        streaming,
        supported,
    } = m;
    if !supported {
        let _ = writeln!(
            out,
            "    // `{name} @{ordinal}` has type parameters: not served by actors.\n"
        );
        return;
    }
    let prefix = alias_prefix(name);
    let results = if *streaming {
        String::new()
    } else {
        format!("results: {module}::{prefix}Results, ")
    };
    let unused = if *streaming {
        "(params, ctx)"
    } else {
        "(params, results, ctx)"
    };
    let kind = if *streaming { " (streaming)" } else { "" };
    let _ = writeln!(
        out,
        "    /// `{name} @{ordinal}`{kind}.\n\
         \x20   fn {fn_name}(&mut self, params: {module}::{prefix}Params, {results}\
         ctx: &mut {rt}::actix::Context<Self>) \
         -> ::core::result::Result<{rt}::actor::Reply<Self>, {rt}::capnp::Error> {{\n\
         \x20       let _ = {unused};\n\
         \x20       ::core::result::Result::Err({rt}::actor::unimplemented(\"{interface}\", \"{name}\"))\n\
         \x20   }}\n"
    );
}

/// Writes the hidden function that finds the route of an interface ID:
/// this interface's, or one of its superclasses'.
fn route_fn(
    rt: &str,
    name: &str,
    schema_name: &str,
    id: u64,
    methods: &[Method],
    supers: &[String],
    out: &mut String,
) {
    let names: Vec<String> = methods.iter().map(|m| format!("{:?}", m.name)).collect();
    let _ = writeln!(
        out,
        "    /// The route of `interface_id` if this trait (or one it extends) serves it\n\
         \x20   /// (used by `serve_actor!`).\n\
         \x20   #[doc(hidden)]\n\
         \x20   fn __capnp_actix_route(interface_id: u64) -> ::core::option::Option<{rt}::actor::Route<Self>> {{\n\
         \x20       if interface_id == {id:#x} {{\n\
         \x20           return ::core::option::Option::Some({rt}::actor::Route::new(\"{schema_name}\", &[{}], \
         |actor, method_id, params, results, ctx| match method_id {{",
        names.join(", ")
    );
    for m in methods.iter().filter(|m| m.supported) {
        let args = if m.streaming {
            "{ drop(results); params }"
        } else {
            "params"
        };
        let results = if m.streaming {
            String::new()
        } else {
            format!("{rt}::capnp::private::capability::internal_get_typed_results(results), ")
        };
        let _ = writeln!(
            out,
            "                {} => <Self as {name}>::{}(actor, \
             {rt}::capnp::private::capability::internal_get_typed_params({args}), {results}ctx),",
            m.ordinal, m.fn_name
        );
    }
    let _ = writeln!(
        out,
        "                _ => ::core::result::Result::Err({rt}::actor::no_such_method(\"{schema_name}\", method_id)),\n\
         \x20           }}));\n\
         \x20       }}"
    );
    let mut chain = String::from("        ::core::option::Option::None");
    for s in supers {
        let _ = write!(
            chain,
            "\n            .or_else(|| <Self as {s}>::__capnp_actix_route(interface_id))"
        );
    }
    let _ = writeln!(out, "{chain}\n    }}");
}

/// Wraps the body of a file's `actors` module into the module itself, to
/// append to capnpc's code for that file.
pub fn actors_module(body: &str) -> String {
    format!(
        "\n/// Actor traits for the interfaces of this file (generated by capnp-actix-build):\n\
         /// implement them on an actix actor to serve the interfaces from it.\n\
         pub mod {ACTORS_MODULE} {{\n{body}}}\n"
    )
}
