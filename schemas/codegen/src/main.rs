//! Regenerates the committed Rust code of the Cap'n Proto schemas.
//!
//! Compiles every schema in `schemas/` with `capnp compile` + `capnpc` and
//! writes `schemas/src/<name>_capnp.rs`. Run it through
//! `scripts/regen-schemas.sh` (or `cargo run -p capnp-actix-codegen`).
//!
//! Needs the `capnp` compiler on `PATH`; set `CAPNP=/path/to/capnp` to use a
//! different binary.
//!
//! capnpc 0.27 emits the type parameters of a method's `XParams`/`XResults`
//! aliases in `HashSet` order when the params/results struct is a named
//! generic struct (only `Persistent.save` here), so its output differs from
//! run to run. [`canonicalize_method_aliases`] rewrites those parameter lists
//! into a fixed order so the committed code can be checked for staleness.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Schemas compiled, relative to `schemas/`. Each produces `src/<stem>_capnp.rs`
/// (with `-` replaced by `_`).
const SCHEMAS: &[&str] = &[
    "rpc.capnp",
    "rpc-twoparty.capnp",
    "persistent.capnp",
    "echo_api.capnp",
    "calculator.capnp",
    "bench.capnp",
    "test_api.capnp",
    "fuzz.capnp",
];

fn schemas_dir() -> PathBuf {
    // CARGO_MANIFEST_DIR is `schemas/codegen`; the schemas live one level up.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    dir.canonicalize().unwrap_or(dir)
}

fn main() -> ExitCode {
    let schemas = schemas_dir();
    let out = schemas.join("src");

    let mut cmd = capnpc::CompilerCommand::new();
    // The schemas import nothing, so keep the build independent of whatever
    // happens to be installed under /usr/include.
    cmd.no_standard_import()
        .src_prefix(&schemas)
        .output_path(&out);
    if let Some(capnp) = std::env::var_os("CAPNP") {
        cmd.capnp_executable(capnp);
    }
    for schema in SCHEMAS {
        cmd.file(schemas.join(schema));
    }

    if let Err(e) = cmd.run() {
        eprintln!("capnp-actix-codegen: schema compilation failed: {e}");
        return ExitCode::FAILURE;
    }

    for schema in SCHEMAS {
        let stem = schema.trim_end_matches(".capnp").replace('-', "_");
        let path = out.join(format!("{stem}_capnp.rs"));
        let result = std::fs::read_to_string(&path).and_then(|text| {
            let fixed = canonicalize_method_aliases(&text);
            if fixed == text {
                Ok(())
            } else {
                std::fs::write(&path, fixed)
            }
        });
        if let Err(e) = result {
            eprintln!("capnp-actix-codegen: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("generated {}", path.display());
    }
    ExitCode::SUCCESS
}

/// Puts the type parameters of every generated method alias
/// (`pub type SaveParams<Owner,SturdyRef,> = ::capnp::capability::Params<..>;`)
/// in the order they first appear on the alias's right-hand side, and rewrites
/// every use of the alias (`SaveParams<Owner,SturdyRef,>`) to match.
///
/// Uses always spell the list exactly as the declaration does, so this is a
/// consistent renaming of positions and the code's meaning is unchanged.
fn canonicalize_method_aliases(text: &str) -> String {
    let mut renames: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let Some(decl) = line.trim_start().strip_prefix("pub type ") else {
            continue;
        };
        let Some((head, rhs)) = decl.split_once("> = ") else {
            continue;
        };
        if !(rhs.starts_with("::capnp::capability::Params<")
            || rhs.starts_with("::capnp::capability::Results<"))
        {
            continue;
        }
        let Some((name, list)) = head.split_once('<') else {
            continue;
        };
        let params: Vec<&str> = list.split(',').filter(|p| !p.is_empty()).collect();
        if params.len() < 2 {
            continue;
        }
        let mut sorted = params.clone();
        sorted.sort_by_key(|p| find_word(rhs, p).unwrap_or(usize::MAX));
        if sorted == params {
            continue;
        }
        let from = format!("{name}<{list}>");
        let to = format!(
            "{name}<{}>",
            sorted.iter().map(|p| format!("{p},")).collect::<String>()
        );
        match renames.iter().find(|(f, _)| *f == from) {
            Some((_, t)) => assert_eq!(*t, to, "conflicting canonical orders for `{from}`"),
            None => renames.push((from, to)),
        }
    }
    let mut text = text.to_owned();
    for (from, to) in &renames {
        text = replace_word(&text, from, to);
    }
    text
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Byte offset of the first occurrence of identifier `word` in `s`.
fn find_word(s: &str, word: &str) -> Option<usize> {
    let mut start = 0;
    while let Some(i) = s[start..].find(word) {
        let at = start + i;
        let end = at + word.len();
        let before_ok = !s[..at].chars().next_back().is_some_and(is_ident_char);
        let after_ok = !s[end..].chars().next().is_some_and(is_ident_char);
        if before_ok && after_ok {
            return Some(at);
        }
        start = at + 1;
    }
    None
}

/// Replaces each occurrence of `from` in `s` that is not preceded by an
/// identifier character.
fn replace_word(s: &str, from: &str, to: &str) -> String {
    let mut result = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(from) {
        let preceded = rest[..i].chars().next_back().is_some_and(is_ident_char)
            || (i == 0 && result.chars().next_back().is_some_and(is_ident_char));
        result.push_str(&rest[..i]);
        result.push_str(if preceded { from } else { to });
        rest = &rest[i + from.len()..];
    }
    result.push_str(rest);
    result
}

#[cfg(test)]
mod tests {
    use super::canonicalize_method_aliases;

    #[test]
    fn reorders_alias_params_and_uses() {
        let input = "\
    pub type SaveParams<Owner,SturdyRef,> = ::capnp::capability::Params<m::Owned<SturdyRef,Owner>>;
    pub type SaveResults<SturdyRef,Owner,> = ::capnp::capability::Results<r::Owned<SturdyRef,Owner>>;
        fn save(_: SaveParams<Owner,SturdyRef,>, _: SaveResults<SturdyRef,Owner,>, _: XSaveParams<Owner,SturdyRef,>);
";
        let expected = "\
    pub type SaveParams<SturdyRef,Owner,> = ::capnp::capability::Params<m::Owned<SturdyRef,Owner>>;
    pub type SaveResults<SturdyRef,Owner,> = ::capnp::capability::Results<r::Owned<SturdyRef,Owner>>;
        fn save(_: SaveParams<SturdyRef,Owner,>, _: SaveResults<SturdyRef,Owner,>, _: XSaveParams<Owner,SturdyRef,>);
";
        assert_eq!(canonicalize_method_aliases(input), expected);
        assert_eq!(canonicalize_method_aliases(expected), expected);
    }
}
