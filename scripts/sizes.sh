#!/usr/bin/env bash
# Stripped size of the release binaries per target and feature set (`make sizes`):
# builds both targets as `make static` does (kmsenv, default features) and as
# `scripts/release.sh static-full` does (kmsenv-full, features `full` = s3 + ssm),
# and writes the table into bench/RESULTS.md between its "make sizes" markers
# (bench/run.py keeps that part when it rewrites the file).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEFAULT_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
FULL_DIR=$DEFAULT_DIR/full
TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)

scripts/release.sh static
scripts/release.sh static-full

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
dirty=$([[ -z $(git status --porcelain --untracked-files=no 2>/dev/null) ]] || echo ' (with uncommitted changes)')
{
    echo '<!-- make sizes: begin -->'
    echo '## Binary size'
    echo
    echo "Measured by \`make sizes\` (\`scripts/sizes.sh\`: \`scripts/release.sh static\`, i.e. \`cargo auditable build --release --locked\`"
    echo "for both targets, profile \`release\`: opt-level s, fat LTO, 1 codegen unit, panic=abort, stripped; then the same with"
    echo "features \`full\` = s3 + ssm, \`scripts/release.sh static-full\`) on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit$dirty, $(rustc --version)."
    echo "Sizes are of the stripped files as shipped (\`stat -c %s\`), dependency list (.dep-v0) included. Budget: 6 MiB = 6291456 bytes,"
    echo "for \`kmsenv\` (default features: KMS, Secrets Manager references); \`kmsenv-full\` ships next to it in each tarball, outside the budget."
    echo
    echo '| target | binary (features) | bytes | MiB | of the 6 MiB budget | full minus default |'
    echo '|---|---|---:|---:|---:|---:|'
    for t in "${TARGETS[@]}"; do
        base=$(stat -c %s "$DEFAULT_DIR/$t/release/kmsenv")
        full=$(stat -c %s "$FULL_DIR/$t/release/kmsenv")
        awk -v t="$t" -v s="$base" \
            'BEGIN { printf "| %s | kmsenv (default) | %d | %.2f | %.0f%% | |\n", t, s, s / 1048576, 100 * s / 6291456 }'
        awk -v t="$t" -v s="$full" -v b="$base" \
            'BEGIN { printf "| %s | kmsenv-full (full) | %d | %.2f | %.0f%% | %d (%.0f KiB) |\n", t, s, s / 1048576, 100 * s / 6291456, s - b, (s - b) / 1024 }'
    done
    echo '<!-- make sizes: end -->'
} >"$ROOT/target/sizes.md"
cat "$ROOT/target/sizes.md"
python3 - "$ROOT/bench/RESULTS.md" "$ROOT/target/sizes.md" <<'PY'
import sys
from pathlib import Path
results, section = Path(sys.argv[1]), Path(sys.argv[2]).read_text()
old = results.read_text() if results.exists() else "# kmsenv benchmark results\n"
begin, end = "<!-- make sizes: begin -->", "<!-- make sizes: end -->"
i, j = old.find(begin), old.find(end)
if i >= 0 and j > i:
    new = old[:i] + section.rstrip("\n") + old[j + len(end):]
else:
    new = old.rstrip("\n") + "\n\n" + section
results.write_text(new)
PY
echo "wrote the table into bench/RESULTS.md"
