#!/usr/bin/env bash
# Regenerates schemas/src/*_capnp.rs from the schemas in schemas/, and the
# actor traits of the tutorial's schemas (src/schemas/*_capnp/actors.rs).
#
# Needs the `capnp` compiler on PATH (or CAPNP=/path/to/capnp). The generated
# code is committed, so only people changing a schema need to run this.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

if ! command -v "${CAPNP:-capnp}" >/dev/null 2>&1; then
    echo "regen-schemas: the Cap'n Proto compiler '${CAPNP:-capnp}' was not found." >&2
    echo "Install it (e.g. 'apt-get install capnproto') or set CAPNP=/path/to/capnp." >&2
    exit 1
fi

cargo run --quiet -p capnp-actix-codegen
