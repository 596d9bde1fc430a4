#!/usr/bin/env bash
# Stripped size of the release binary per target and feature set (`make sizes`):
# builds both targets as `make static` does, without and with the `s3` feature,
# and writes the table into bench/RESULTS.md between its "make sizes" markers
# (bench/run.py keeps that part when it rewrites the file).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEFAULT_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
FULL_DIR=$ROOT/target/full
TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)

scripts/release.sh static
CARGO_TARGET_DIR=$FULL_DIR KMSENV_FEATURES=s3 scripts/release.sh static

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
dirty=$([[ -z $(git status --porcelain --untracked-files=no 2>/dev/null) ]] || echo ' (with uncommitted changes)')
{
    echo '<!-- make sizes: begin -->'
    echo '## Binary size'
    echo
    echo "Measured by \`make sizes\` (\`scripts/sizes.sh\`: \`scripts/release.sh static\`, i.e. \`cargo auditable build --release --locked\`"
    echo "for both targets, profile \`release\`: opt-level s, fat LTO, 1 codegen unit, panic=abort, stripped; then the same with"
    echo "\`KMSENV_FEATURES=s3\`) on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit$dirty, $(rustc --version)."
    echo "Sizes are of the stripped files as shipped (\`stat -c %s\`), dependency list (.dep-v0) included. Budget: 6 MiB = 6291456 bytes."
    echo
    echo '| target | features | bytes | MiB | of the 6 MiB budget |'
    echo '|---|---|---:|---:|---:|'
    for features in default s3; do
        dir=$DEFAULT_DIR
        [[ $features == default ]] || dir=$FULL_DIR
        for t in "${TARGETS[@]}"; do
            size=$(stat -c %s "$dir/$t/release/kmsenv")
            awk -v t="$t" -v f="$features" -v s="$size" \
                'BEGIN { printf "| %s | %s | %d | %.2f | %.0f%% |\n", t, f, s, s / 1048576, 100 * s / 6291456 }'
        done
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
