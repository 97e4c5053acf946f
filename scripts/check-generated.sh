#!/usr/bin/env bash
# Fails if the committed generated code (schemas/src, and the actor traits
# in src/schemas) is out of date with the schemas: regenerates it, then
# checks git sees no change.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

"$repo_root/scripts/regen-schemas.sh"

status=0
if ! git diff --exit-code --stat -- schemas/src src/schemas; then
    status=1
fi
untracked="$(git ls-files --others --exclude-standard -- schemas/src src/schemas)"
if [ -n "$untracked" ]; then
    echo "Untracked generated files:"
    echo "$untracked"
    status=1
fi

if [ "$status" -ne 0 ]; then
    echo >&2
    echo "error: the generated code in schemas/src or src/schemas is stale (see above)." >&2
    echo "Run scripts/regen-schemas.sh and commit the updated files." >&2
    exit 1
fi
echo "schemas/src and src/schemas are up to date with the schemas."
