# kmsenv — build, test and try it. Everything a target needs it installs or starts itself.

CARGO  ?= cargo
PIP    ?= python3 -m pip
# Where cargo builds: `target/`, unless CARGO_TARGET_DIR (or a cargo config) moved it.
TARGET := $(shell $(CARGO) metadata --format-version 1 --no-deps 2>/dev/null \
	| python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null || echo target)
BIN    := $(TARGET)/debug/kmsenv

MUSL   := x86_64-unknown-linux-musl
STATIC := $(TARGET)/$(MUSL)/release/kmsenv
ARM    := aarch64-unknown-linux-musl
STATIC_ARM := $(TARGET)/$(ARM)/release/kmsenv
# kmsenv-full: features `full` (s3 + ssm); its own target dir keeps both binaries.
FULL   := $(TARGET)/full/$(MUSL)/release/kmsenv
FULL_ARM := $(TARGET)/full/$(ARM)/release/kmsenv

FUZZ_SECONDS ?= 60
FUZZ_TARGETS := parse open dotenv

.PHONY: build release static static-full musl test lint tools demo bench bench-allocs fuzz clean \
	dist reproducible image install-check sizes

build:
	$(CARGO) build

release:
	$(CARGO) build --release

## The release binaries: static, stripped musl builds for x86_64 and aarch64 (one
## `cargo auditable build`, paths remapped), each checked static, stripped and
## <= 6 MiB. Installs the rustup targets, musl-tools, gcc-aarch64-linux-gnu,
## qemu-user-static, cargo-auditable and what tests/release.rs runs (zsh, fish,
## man-db) when missing. Without S3 support (README, "Files in S3").
static:
	@scripts/release.sh static

## kmsenv-full, both targets: features `full` (`-f s3://BUCKET/KEY`, SSM references),
## in $(TARGET)/full; outside the size budget. `make dist` ships it in each tarball.
static-full:
	@scripts/release.sh static-full

musl:
	@rustup target list --installed | grep -qx $(MUSL) || rustup target add $(MUSL)
	@command -v musl-gcc >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq musl-tools; }

## Test tools: moto_server (the KMS the tests talk to), the AWS CLI (one test
## pastes its output into a file, as users do) and Docker's engine (docker.io).
## Installed only when missing.
tools:
	@command -v moto_server >/dev/null 2>&1 && python3 -c 'import flask' 2>/dev/null \
		|| $(PIP) install --quiet 'moto[server]'
	@command -v aws >/dev/null 2>&1 || $(PIP) install --quiet awscli
	@# tests/precommit.rs: the pre-commit framework running .pre-commit-hooks.yaml.
	@python3 -c 'import pre_commit' 2>/dev/null || $(PIP) install --quiet pre-commit
	@# tests/docker.rs: a real engine (the support starts dockerd; a client alone is not enough).
	@command -v dockerd >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq docker.io; }

## Clippy three times: the default code, with S3 only, and with every feature
## (`full` = s3 + ssm; the SSM tests of tests/references.rs too). Then cargo-deny
## (deny.toml): licences, sources and duplicate crates, offline (advisories need the network).
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --features s3 -- -D warnings
	$(CARGO) clippy --all-targets --features full -- -D warnings
	@command -v cargo-deny >/dev/null 2>&1 || $(CARGO) install --locked cargo-deny
	$(CARGO) deny --offline check bans licenses sources

## fmt check, clippy, unit tests, and the integration tests against moto_server
## (started by the tests themselves on a free loopback port), with every feature on
## (`full`: moto serves S3, Secrets Manager and SSM too). The release tarballs are
## built first (`dist`: both static binaries and both kmsenv-full):
## tests/scratch_image.rs runs the static binary in an empty root, tests/s3.rs checks
## that it refuses s3:// files, tests/release.rs checks the tarballs and what they hold.
test: tools lint dist
	KMSENV_STATIC_BIN=$(abspath $(STATIC)) KMSENV_STATIC_BIN_AARCH64=$(abspath $(STATIC_ARM)) \
		KMSENV_FULL_BIN=$(abspath $(FULL)) KMSENV_FULL_BIN_AARCH64=$(abspath $(FULL_ARM)) \
		KMSENV_DIST_DIR=$(abspath dist) \
		$(CARGO) test --all-targets --features full
	@scripts/verify-systemd.sh $(STATIC)

## Starts moto_server on loopback, creates a key, init/set/exec, stops it.
demo: tools build
	@scripts/demo.sh $(BIN)

## Each fuzz target for FUZZ_SECONDS (default 60) with the installed nightly toolchain.
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
		echo "== fuzz $$t ($(FUZZ_SECONDS) s)"; \
		(cd fuzz && cargo +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048) || exit 1; \
	done

## Start-up benchmark (issue 3): kmsenv exec against peers, KMS = moto_server behind the
## fault proxy (plain and HTTPS), on loopback; writes bench/RESULTS.md. Installs
## hyperfine and GNU time (apt), boto3 (pip) and dotenvx (npm, into bench/.node) only
## when missing. fnox is measured when present ($FNOX, PATH or bench/.peers);
## `make bench PEERS=all` installs it there first (cargo install: a long build).
## BENCH_ARGS go to bench/run.py (`--only https,alloc`, `--storm-procs 100`, `--quick`).
BENCH_NODE := bench/.node
# The allocator rows: the release binary (mimalloc on musl) next to the same commit
# built with each of these features instead, x86_64 only, each in its own target
# folder (kept between runs). ALLOCS= leaves the rows out.
ALLOCS     ?= musl-malloc jemalloc
ALLOC_DIR  := $(TARGET)/alloc
comma      := ,
empty      :=
ALLOC_BINS := mimalloc=$(abspath $(STATIC))$(subst $(empty) $(empty),,$(foreach a,$(ALLOCS),$(comma)$(a)=$(abspath $(ALLOC_DIR)/$(a)/$(MUSL)/release/kmsenv)))
DOTENVX    := $(BENCH_NODE)/node_modules/.bin/dotenvx
FNOX_ROOT  := bench/.peers
KMSENV_BIN ?= $(STATIC)
PEERS      ?=
BENCH_ARGS ?=

bench: static tools bench-allocs
	@{ command -v hyperfine >/dev/null 2>&1 && test -x /usr/bin/time && command -v openssl >/dev/null 2>&1; } \
		|| { apt-get update -qq && apt-get install -y -qq hyperfine time openssl; }
	@python3 -c 'import boto3' 2>/dev/null || $(PIP) install --quiet boto3
	@test -x $(DOTENVX) || npm install --silent --no-audit --no-fund --prefix $(BENCH_NODE) @dotenvx/dotenvx
	@# fnox's lock file can name a version the registry no longer serves (yanked):
	@# then it is installed without --locked. Its hidapi dependency (YubiKey) builds
	@# against libudev, installed from apt when missing.
	@if [ "$(PEERS)" = all ] && [ -z "$$FNOX" ] && ! command -v fnox >/dev/null 2>&1 \
		&& ! test -x $(FNOX_ROOT)/bin/fnox; then \
		{ pkg-config --exists libudev 2>/dev/null \
			|| { apt-get update -qq && apt-get install -y -qq libudev-dev pkg-config; }; } \
		&& $(CARGO) install --locked --root $(FNOX_ROOT) fnox \
		|| $(CARGO) install --root $(FNOX_ROOT) fnox; fi
	KMSENV_BIN=$(KMSENV_BIN) DOTENVX=$(DOTENVX) KMSENV_ALLOC_BINS=$(if $(strip $(ALLOCS)),$(ALLOC_BINS)) \
		python3 bench/run.py $(BENCH_ARGS)

bench-allocs: static
	@for a in $(ALLOCS); do \
		$(CARGO) auditable build --release --locked --target $(MUSL) --features $$a \
			--target-dir $(ALLOC_DIR)/$$a || exit 1; \
	done

## Release tarballs: dist/kmsenv-VERSION-{x86_64,aarch64}-linux-musl.tar.gz (kmsenv,
## kmsenv-full, README, SECURITY.md, CHANGELOG.md, both licences, completions, man pages) and
## dist/SHA256SUMS. Tarball mtimes are the commit's time (SOURCE_DATE_EPOCH).
dist:
	@scripts/release.sh dist

## The same commit built twice, in this checkout (or a clone when it has changes)
## and in a clone elsewhere with another CARGO_TARGET_DIR: binaries and tarballs
## must be byte-identical. Prints both hashes of each.
reproducible:
	@scripts/release.sh reproducible

## kmsenv:VERSION: FROM scratch with only /kmsenv, built by the real engine (started
## as DESIGN.md §6 says when it is not running).
image: static
	@scripts/release.sh image

## `cargo install --path .` into a temporary root, as a user installs from source.
install-check:
	@root=$$(mktemp -d) && trap 'rm -rf "$$root"' EXIT \
		&& $(CARGO) install --locked --path . --root "$$root" \
		&& "$$root/bin/kmsenv" --version

## Stripped size per target and feature set (bench/RESULTS.md, "Binary size").
sizes:
	@scripts/sizes.sh

clean:
	$(CARGO) clean
