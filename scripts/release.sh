#!/usr/bin/env bash
# Release builds, one place for what `make static`, `make dist` and
# `make reproducible` do, so that the binaries the tests run are the ones shipped.
#
#   scripts/release.sh setup          install what the builds need, only when missing
#   scripts/release.sh static         both static musl binaries, checked
#                                     (KMSENV_FEATURES=s3: with S3, outside the size budget)
#   scripts/release.sh static-full    the same with features `full` (S3, SSM): `kmsenv-full`,
#                                     built in TARGET_DIR/full (outside the size budget)
#   scripts/release.sh dist [DIR]     static + static-full + one tarball per target holding
#                                     kmsenv and kmsenv-full + SHA256SUMS (default dist/)
#   scripts/release.sh reproducible   the same commit built in two folders, compared
#
# Reproducible by construction: `--locked`, paths remapped out of the binaries
# (--remap-path-prefix for the source folder, the target folder and CARGO_HOME),
# no timestamps in the binary (C code's __DATE__/__TIME__ come from a fixed
# SOURCE_DATE_EPOCH), and tarballs with sorted names, fixed owners and
# modes, mtimes from the commit (SOURCE_DATE_EPOCH) and gzip -n.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
CARGO=${CARGO:-cargo}
TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
MAX_BYTES=$((6 * 1024 * 1024))
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CARGO_HOME_DIR=${CARGO_HOME:-$HOME/.cargo}
FEATURES=${KMSENV_FEATURES:-}
# kmsenv-full: every optional feature, in a target folder of its own (the binary
# has the same name as the default one). Inside TARGET_DIR, so it is remapped
# like it and two checkouts build the same bytes.
FULL_FEATURES=full
FULL_TARGET_DIR=$TARGET_DIR/full
# What C code's __DATE__/__TIME__ say (SOURCE_DATE_EPOCH during the builds,
# see cargo_build): 2026-01-01T00:00:00Z, fixed so the bytes do not depend on
# when or where they were built.
BUILD_DATE_EPOCH=1767225600
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)

# Temporary folders, removed on every exit path.
CLEANUP=()
trap 'rm -rf "${CLEANUP[@]}"' EXIT

say() { printf 'release: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

apt_install() {
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } >&2
}

# Everything the release builds need, installed only when missing.
setup() {
    local t
    for t in "${TARGETS[@]}"; do
        rustup target list --installed | grep -qx "$t" || rustup target add "$t" >&2
    done
    local pkgs=()
    command -v musl-gcc >/dev/null 2>&1 || pkgs+=(musl-tools)
    command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || pkgs+=(gcc-aarch64-linux-gnu)
    # Not for the build: the tests run the arm64 binary under qemu-user.
    command -v qemu-aarch64-static >/dev/null 2>&1 || pkgs+=(qemu-user-static)
    command -v readelf >/dev/null 2>&1 || pkgs+=(binutils)
    # What tests/release.rs runs the completions and man pages with.
    command -v zsh >/dev/null 2>&1 || pkgs+=(zsh)
    command -v fish >/dev/null 2>&1 || pkgs+=(fish)
    command -v man >/dev/null 2>&1 || pkgs+=(man-db)
    command -v groff >/dev/null 2>&1 || pkgs+=(groff-base)
    ((${#pkgs[@]} == 0)) || apt_install "${pkgs[@]}"
    command -v cargo-auditable >/dev/null 2>&1 || "$CARGO" install --locked cargo-auditable >&2
}

# `cargo auditable build` embeds the dependency list (`cargo audit bin`, distro
# scanners read it). One cargo run for both targets: build scripts and proc
# macros are built once, for the host.
build_static() {
    cargo_build "$TARGET_DIR" "$FEATURES"
    local t
    for t in "${TARGETS[@]}"; do check_binary "$t" "$(binary "$t")" "$FEATURES"; done
}

# kmsenv-full of both targets.
build_full() {
    cargo_build "$FULL_TARGET_DIR" "$FULL_FEATURES"
    local t
    for t in "${TARGETS[@]}"; do check_binary "$t" "$(full_binary "$t")" "$FULL_FEATURES"; done
}

# One `cargo auditable build` of both targets into target folder $1 with features $2.
cargo_build() {
    local dir=$1 features=$2 flags t
    # Separated by 0x1f (CARGO_ENCODED_RUSTFLAGS), so paths may hold spaces. The
    # last matching prefix wins: the target folder may lie inside the source folder.
    flags=$(printf '%s\x1f' \
        "--remap-path-prefix=$CARGO_HOME_DIR=/cargo" \
        "--remap-path-prefix=$ROOT=/kmsenv" \
        "--remap-path-prefix=$TARGET_DIR=/kmsenv/target")
    local args=()
    for t in "${TARGETS[@]}"; do args+=(--target "$t"); done
    [[ -z $features ]] || args+=(--features "$features")
    # ring's C code and the link of the arm64 binary go through Debian's cross
    # gcc; Rust's musl targets bring their own libc and start files. The cc crate
    # passes the remap flags above to gcc as -ffile-prefix-map; -frandom-seed keeps
    # gcc's own randomness out of the C objects (ring, mimalloc).
    # mimalloc's options.c holds __DATE__ and __TIME__ (its verbose banner "built
    # on ..."), which gcc takes from SOURCE_DATE_EPOCH when set, else from the
    # clock: without it every build of mimalloc differed, so every binary did.
    # A fixed value, not the commit's time: cc makes ring and mimalloc rebuild
    # (and all that depends on them) whenever SOURCE_DATE_EPOCH changes. A value
    # from the caller (a packager's) is kept.
    CARGO_ENCODED_RUSTFLAGS=${flags%$'\x1f'} \
        CFLAGS=-frandom-seed=kmsenv \
        SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$BUILD_DATE_EPOCH} \
        CARGO_TARGET_DIR=$dir \
        CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc \
        AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc \
        "$CARGO" auditable build --release --locked "${args[@]}" >&2
}

binary() { printf '%s/%s/release/kmsenv' "$TARGET_DIR" "$1"; }
full_binary() { printf '%s/%s/release/kmsenv' "$FULL_TARGET_DIR" "$1"; }

# Static (no program interpreter), stripped (no symbol table), within the size
# budget, for the right machine, and carrying its dependency list.
check_binary() {
    local t=$1 bin=$2 features=$3 machine size
    [[ -x $bin ]] || die "$bin was not built"
    case $t in
    x86_64-*) machine='Advanced Micro Devices X86-64' ;;
    aarch64-*) machine='AArch64' ;;
    *) die "unknown target $t" ;;
    esac
    readelf -h "$bin" | grep -q "Machine: *$machine" || die "$bin: not a $machine binary"
    ! readelf -lW "$bin" | grep -q 'INTERP' || die "$bin: not static (it names a program interpreter)"
    ! readelf -SW "$bin" | grep -q ' \.symtab ' || die "$bin: not stripped"
    readelf -SW "$bin" | grep -q ' \.dep-v0 ' || die "$bin: no cargo-auditable dependency list (.dep-v0)"
    size=$(stat -c %s "$bin")
    # The budget is for the default binary; a build with extra features only reports.
    [[ -n $features ]] || ((size <= MAX_BYTES)) || die "$bin: $size bytes, over the budget of $MAX_BYTES"
    say "$bin: $size bytes (features: ${features:-default}), static, stripped, with .dep-v0"
}

source_date_epoch() {
    if [[ -n ${SOURCE_DATE_EPOCH:-} ]]; then
        printf '%s' "$SOURCE_DATE_EPOCH"
    elif git -C "$ROOT" rev-parse --show-toplevel 2>/dev/null | grep -qxF "$ROOT"; then
        git -C "$ROOT" log -1 --format=%ct HEAD
    else
        die "no git checkout here: set SOURCE_DATE_EPOCH (seconds) for the tarballs' mtimes"
    fi
}

# How to run a binary of target $1 on this machine.
runner() {
    case $1 in
    "$(uname -m)"-*) ;;
    aarch64-*) printf 'qemu-aarch64-static' ;;
    x86_64-*) printf 'qemu-x86_64-static' ;;
    esac
}

dist() {
    local out=${1:-$ROOT/dist} epoch stage t short name dir bin run
    epoch=$(source_date_epoch)
    build_static
    build_full
    rm -rf "$out"
    mkdir -p "$out"
    stage=$(mktemp -d "${TMPDIR:-/tmp}/kmsenv-dist.XXXXXX")
    CLEANUP+=("$stage")
    for t in "${TARGETS[@]}"; do
        short=${t/-unknown-/-}
        name=kmsenv-$VERSION-$short
        dir=$stage/$name
        bin=$(binary "$t")
        mkdir -p "$dir/completions" "$dir/man"
        cp "$bin" "$dir/kmsenv"
        cp "$(full_binary "$t")" "$dir/kmsenv-full"
        cp README.md SECURITY.md CHANGELOG.md LICENSE-MIT LICENSE-APACHE "$dir/"
        # Generated by the binary being shipped (under qemu for the other arch),
        # so the pages and scripts match its own command line exactly.
        run=$(runner "$t")
        $run "$dir/kmsenv" completions bash >"$dir/completions/kmsenv.bash"
        $run "$dir/kmsenv" completions zsh >"$dir/completions/_kmsenv"
        $run "$dir/kmsenv" completions fish >"$dir/completions/kmsenv.fish"
        $run "$dir/kmsenv" man --out-dir "$dir/man"
        [[ -s $dir/man/kmsenv.1 && -s $dir/man/kmsenv-exec.1 ]] || die "$name: man pages missing"
        find "$dir" -type d -exec chmod 0755 {} +
        find "$dir" -type f -exec chmod 0644 {} +
        chmod 0755 "$dir/kmsenv" "$dir/kmsenv-full"
        tar --sort=name --format=gnu --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
            -C "$stage" -cf - "$name" | gzip -n -9 >"$out/$name.tar.gz"
        say "$out/$name.tar.gz: $(stat -c %s "$out/$name.tar.gz") bytes"
    done
    (cd "$out" && sha256sum -- *.tar.gz >SHA256SUMS)
    cat "$out/SHA256SUMS"
}

# The same commit, built twice in two folders with two target folders, must
# give the same bytes. The first build is this checkout when it is clean (its
# target folder is warm after `make test`), else a clone like the second.
reproducible() {
    local commit work a b ta tb status=0 f t
    commit=$(git rev-parse HEAD)
    work=$(mktemp -d "${TMPDIR:-/tmp}/kmsenv-repro.XXXXXX")
    CLEANUP+=("$work")
    if [[ -z $(git status --porcelain --untracked-files=no) ]]; then
        a=$ROOT
        ta=$TARGET_DIR
    else
        say "this checkout has uncommitted changes: building commit $commit in two clones"
        a=$work/a
        ta=$work/target-a
        git clone -q "$ROOT" "$a"
        git -C "$a" checkout -q --detach "$commit"
    fi
    b=$work/b
    tb=$work/target-b
    git clone -q "$ROOT" "$b"
    git -C "$b" checkout -q --detach "$commit"
    local t0=$SECONDS t1 t2
    say "build 1: $a (CARGO_TARGET_DIR=$ta)"
    CARGO_TARGET_DIR=$ta "$a/scripts/release.sh" dist "$work/dist-1" >/dev/null
    t1=$((SECONDS - t0))
    say "build 2: $b (CARGO_TARGET_DIR=$tb)"
    CARGO_TARGET_DIR=$tb "$b/scripts/release.sh" dist "$work/dist-2" >/dev/null
    t2=$((SECONDS - t0 - t1))
    echo "commit $commit; build 1 took ${t1} s, build 2 ${t2} s"
    for t in "${TARGETS[@]}"; do
        compare "$t binary" "$ta/$t/release/kmsenv" "$tb/$t/release/kmsenv" || status=1
        compare "$t kmsenv-full" "$ta/full/$t/release/kmsenv" "$tb/full/$t/release/kmsenv" || status=1
    done
    for f in "$work"/dist-1/*; do
        compare "$(basename "$f")" "$f" "$work/dist-2/$(basename "$f")" || status=1
    done
    [[ $(ls "$work/dist-1") == $(ls "$work/dist-2") ]] || { echo "the dist folders differ in their files"; status=1; }
    if ((status == 0)); then echo "reproducible: identical"; else echo "NOT reproducible"; fi
    return $status
}

compare() {
    local what=$1 h1 h2
    h1=$(sha256sum <"$2" | cut -d' ' -f1)
    h2=$(sha256sum <"$3" | cut -d' ' -f1)
    printf '%-44s %s\n%-44s %s\n' "$what (1)" "$h1" "$what (2)" "$h2"
    [[ $h1 == "$h2" ]]
}

# The engine as DESIGN.md §6 runs it: no bridge network, nothing pulled. Started
# when missing and left running (it is the machine's, not this build's).
engine() {
    docker info >/dev/null 2>&1 && return 0
    command -v dockerd >/dev/null 2>&1 || apt_install docker.io
    say "starting dockerd --bridge=none --iptables=false --ip-forward=false (log: /tmp/kmsenv-dockerd.log)"
    setsid dockerd --bridge=none --iptables=false --ip-forward=false >/tmp/kmsenv-dockerd.log 2>&1 </dev/null &
    local pid=$! i
    for i in $(seq 1 120); do
        docker info >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || die "dockerd exited: $(tail -n 5 /tmp/kmsenv-dockerd.log)"
        sleep 0.5
    done
    die "dockerd did not answer within 60 s (see /tmp/kmsenv-dockerd.log)"
}

# kmsenv:VERSION, FROM scratch, holding only /kmsenv: the image to copy from
# (`COPY --from=kmsenv:VERSION /kmsenv /kmsenv`), for this machine's architecture.
image() {
    local bin=${1:-} ctx
    if [[ -z $bin ]]; then
        case $(uname -m) in
        x86_64) bin=$(binary x86_64-unknown-linux-musl) ;;
        aarch64) bin=$(binary aarch64-unknown-linux-musl) ;;
        *) die "no release target for $(uname -m)" ;;
        esac
    fi
    [[ -x $bin ]] || die "$bin is missing: run make static"
    engine
    ctx=$(mktemp -d "${TMPDIR:-/tmp}/kmsenv-image.XXXXXX")
    CLEANUP+=("$ctx")
    cp "$bin" "$ctx/kmsenv"
    chmod 0755 "$ctx/kmsenv"
    printf '%s\n' \
        'FROM scratch' \
        'COPY kmsenv /kmsenv' \
        "LABEL org.opencontainers.image.title=kmsenv org.opencontainers.image.version=$VERSION" \
        'ENTRYPOINT ["/kmsenv"]' >"$ctx/Dockerfile"
    # The legacy builder: BuildKit would look `COPY --from` images up in a registry.
    DOCKER_BUILDKIT=0 docker build -q -t "kmsenv:$VERSION" "$ctx" >&2
    say "built kmsenv:$VERSION from $bin"
}

case ${1:-} in
setup) setup ;;
image) image "${2:-}" ;;
static) setup && build_static ;;
static-full) setup && build_full ;;
dist) setup && dist "${2:-}" ;;
reproducible) setup && reproducible ;;
*) die "usage: $0 setup|static|static-full|dist [DIR]|reproducible|image [BIN]" ;;
esac
