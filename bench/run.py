#!/usr/bin/env python3
"""kmsenv benchmark (`make bench`): start-up time, peak memory and KMS calls of
`kmsenv exec`, against peers doing the same job, and a fleet start storm.

Everything runs on this machine, on loopback: moto_server is the KMS, and the
project's fault proxy (tests/support/kms_fault_proxy.py) sits in front of it to
add latency, enforce a request quota and count calls. Files are made with kmsenv
itself. Results go to bench/RESULTS.md (and stdout); raw hyperfine JSON and logs
to bench/results/.

    python3 bench/run.py                 # the full run (what `make bench` does)
    python3 bench/run.py --quick         # few runs, small N: for developing the bench
    python3 bench/run.py --only https,alloc          # some parts only (a partial report)
    python3 bench/run.py --only storm --storm-procs 200   # a smaller fleet storm

Environment: KMSENV_BIN (binary to measure; default: the static musl build),
DOTENVX (dotenvx command; default bench/.node/node_modules/.bin/dotenvx), FNOX
(fnox binary; default: fnox on PATH, else bench/.peers/bin/fnox), KMSENV_ALLOC_BINS
(NAME=BINARY,… : the allocator rows; `make bench` builds them).
Needs hyperfine, GNU time (/usr/bin/time), moto_server on PATH, boto3, the AWS CLI,
node and, for the HTTPS rows, openssl and unshare (root, or user namespaces);
`make bench` installs what is missing. Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import ctypes
import dataclasses
import datetime
import http.client
import json
import os
import platform
import re
import secrets
import select
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PEERS = BENCH / "peers"
PROXY = ROOT / "tests" / "support" / "kms_fault_proxy.py"
STATIC_BIN = ROOT / "target" / "x86_64-unknown-linux-musl" / "release" / "kmsenv"
DEFAULT_DOTENVX = BENCH / ".node" / "node_modules" / ".bin" / "dotenvx"
# The parts of a run, in order; `--only` picks some (the report shows what ran).
SECTIONS = ("base", "latency", "https", "alloc", "storm", "scale")
# Where `make bench PEERS=all` installs fnox (`cargo install --root`).
FNOX_ROOT = BENCH / ".peers"
REGION = "us-east-1"
# The name a typical host's kmsenv talks to. The HTTPS rows lead it to the proxy
# (a hosts copy over /etc/hosts) with a test CA standing in for Amazon Root CA 1.
AWS_HOST = f"kms.{REGION}.amazonaws.com"
CONTEXT = ("app", "bench")
MIB = 1024 * 1024

# A peer whose single run is slower than this gets fewer runs (see Plan).
SLOW_RUN_S = 3.0
VERY_SLOW_RUN_S = 8.0
GLACIAL_RUN_S = 20.0
# kmsenv runs slower than this (direct files with many values) get runs_fast_slow runs.
FAST_SLOW_RUN_S = 0.25


@dataclass
class Plan:
    """How much to measure. The full plan is what `make bench` runs."""

    ns: list[int]
    direct_ns: list[int]
    latency_envelope_ns: list[int]
    latency_direct_ns: list[int]
    boto3_latency_ns: list[int]
    awscli_ns: list[int]
    fnox_ns: list[int]
    # HTTPS rows: envelope files at these N over the proxy's TLS mode.
    https_ns: list[int]
    # Targets that compare two commands (HTTPS vs HTTP, N=1000 vs N=1): this many
    # rounds of both side by side (order swapped every round), this many runs each.
    pair_rounds: int = 10
    pair_runs: int = 15
    warmup: int = 3
    runs_fast: int = 30  # kmsenv and `true`
    runs_fast_slow: int = 10  # kmsenv runs slower than FAST_SLOW_RUN_S
    runs_peer: int = 10  # peers, when one run is under SLOW_RUN_S
    warmup_slow: int = 1  # peers slower than SLOW_RUN_S
    runs_slow: int = 5
    runs_very_slow: int = 3  # peers slower than VERY_SLOW_RUN_S
    warmup_glacial: int = 0  # peers slower than GLACIAL_RUN_S
    runs_glacial: int = 2
    # Peak RSS: the check run (under GNU time) plus this many runs of the command.
    rss_runs_fast: int = 5
    rss_runs_peer: int = 2
    rss_runs_slow: int = 1
    rss_runs_very_slow: int = 0
    floor_samples: int = 30
    storm_procs: int = 500
    storm_concurrency: int = 50
    storm_direct_values: int = 20
    # Below what moto + the proxy can serve on this machine (~180-250 Decrypt/s, measured
    # in the "local KMS" table), so that, as with real KMS, the quota is the limit.
    storm_quota_rps: float = 100
    storm_quota_burst: float = 100
    storm_timeout_s: int = 30
    latency_ms: float = 20
    # `export` next to `list` on one large plain file: export must stay linear.
    scale_n: int = 200_000
    scale_warmup: int = 1
    scale_runs: int = 5


FULL = Plan(
    ns=[1, 10, 100, 1000],
    direct_ns=[1, 10, 50, 100],
    latency_envelope_ns=[1, 10, 100, 1000],
    latency_direct_ns=[1, 10, 50, 100],
    boto3_latency_ns=[1, 10, 50],
    awscli_ns=[1, 10],
    fnox_ns=[1, 10, 100],
    https_ns=[1, 100],
)

QUICK = Plan(
    ns=[1, 10, 100],
    direct_ns=[1, 10, 50],
    latency_envelope_ns=[1, 100],
    latency_direct_ns=[1, 50],
    boto3_latency_ns=[1],
    awscli_ns=[1],
    fnox_ns=[1],
    https_ns=[1],
    pair_rounds=3,
    pair_runs=5,
    warmup=1,
    runs_fast=5,
    runs_peer=3,
    runs_slow=2,
    runs_very_slow=2,
    runs_glacial=1,
    rss_runs_fast=2,
    rss_runs_peer=1,
    rss_runs_slow=0,
    floor_samples=10,
    scale_n=20_000,
    scale_runs=2,
    storm_procs=100,
    storm_concurrency=20,
)


def kept_sizes(report_path: Path) -> str:
    """The "Binary size" section that `make sizes` wrote into the report, which this
    run does not measure and so must not drop."""
    begin, end = "<!-- make sizes: begin -->", "<!-- make sizes: end -->"
    try:
        old = report_path.read_text()
    except FileNotFoundError:
        return ""
    i, j = old.find(begin), old.find(end)
    return "\n" + old[i:j + len(end)] + "\n" if 0 <= i < j else ""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------
# Services: moto_server and the fault proxy, killed at exit whatever happens.

_services: list[subprocess.Popen] = []


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL this child if the bench dies without cleaning up."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort; stop_services() is the main path
        pass


def start_service(args: list[str], log_path: Path, stdout=None) -> subprocess.Popen:
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=stdout if stdout is not None else open(log_path, "wb"),
        stderr=open(log_path, "ab") if stdout is not None else subprocess.STDOUT,
        preexec_fn=_die_with_parent,
        start_new_session=True,
    )
    _services.append(proc)
    return proc


def stop_services() -> None:
    while _services:
        proc = _services.pop()
        if proc.poll() is not None:
            continue
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the group is ours alone
        except ProcessLookupError:
            continue
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_call(port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None,
              timeout: float = 30.0, tls: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    conn = (http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=tls) if tls
            else http.client.HTTPConnection("127.0.0.1", port, timeout=timeout))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def start_moto(work: Path) -> int:
    moto = shutil.which("moto_server")
    if not moto:
        raise BenchError("moto_server not found on PATH (make tools installs moto[server])")
    last = ""
    for attempt in range(3):
        port = free_port()
        proc = start_service([moto, "-H", "127.0.0.1", "-p", str(port)], work / f"moto-{attempt}.log")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                last = f"moto_server exited ({proc.returncode}) on port {port}"
                break
            try:
                if http_call(port, "GET", "/", timeout=2)[0] == 200:
                    return port
            except OSError:
                pass
            time.sleep(0.1)
        else:
            last = f"moto_server did not answer on 127.0.0.1:{port} within 30 s"
    raise BenchError(last)


def start_proxy(work: Path, moto_port: int, tls: TestCa | None = None) -> int:
    """The fault proxy in front of moto; with `tls`, it also serves HTTPS on the
    same port (it tells TLS from plain HTTP by a connection's first byte)."""
    tls_args = ["--tls-cert", str(tls.server_cert), "--tls-key", str(tls.server_key)] if tls else []
    proc = start_service(
        [sys.executable, str(PROXY), "--upstream", f"http://127.0.0.1:{moto_port}", "--listen", "127.0.0.1:0",
         *tls_args],
        work / "proxy.log",
        stdout=subprocess.PIPE,
    )
    deadline = time.monotonic() + 15
    line = b""
    while time.monotonic() < deadline and not line.endswith(b"\n"):
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 256)
            if not chunk:
                break
            line += chunk
    match = re.match(rb"listening on 127\.0\.0\.1:(\d+)", line)
    if not match:
        raise BenchError(f"the fault proxy did not start: {line!r} (see {work / 'proxy.log'})")
    return int(match.group(1))


@dataclass
class TestCa:
    """A throwaway CA and a server certificate it signed (for 127.0.0.1, localhost
    and AWS_HOST). The CA's subject is Amazon Root CA 1's, byte for byte, so that
    for AWS_HOST kmsenv finds it in its first stage (the store's certificates whose
    subject is an Amazon Trust Services root's), as a real host finds the real root."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_test_ca(folder: Path) -> TestCa:
    """Made with the openssl CLI, the way tests/support/tls.rs makes the tests' CA
    (and bench/tls/setup.sh its Amazon Root CA 1 stand-in)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = TestCa(folder / "test-ca.pem", folder / "server.pem", folder / "server.key")
    ca_key, csr, ext = folder / "test-ca.key", folder / "server.csr", folder / "server.ext"
    ca_cnf = folder / "test-ca.cnf"
    ext.write_text("basicConstraints = critical, CA:FALSE\n"
                   "keyUsage = critical, digitalSignature, keyEncipherment\n"
                   "extendedKeyUsage = serverAuth\n"
                   f"subjectAltName = DNS:localhost, DNS:{AWS_HOST}, IP:127.0.0.1\n")
    # Amazon Root CA 1's subject: C=US, O=Amazon, CN=Amazon Root CA 1, each a
    # PrintableString (`string_mask = pkix`; openssl's default would write UTF8String).
    ca_cnf.write_text("[req]\nprompt = no\nstring_mask = pkix\ndistinguished_name = dn\n"
                      "[dn]\nC = US\nO = Amazon\nCN = Amazon Root CA 1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    env = dict(os.environ)
    run(["openssl", "req", "-x509", *ec, "-days", "2", "-config", str(ca_cnf),
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-keyout", str(ca_key), "-out", str(ca.ca_cert)], env)
    run(["openssl", "req", "-new", *ec, "-subj", "/CN=localhost", "-keyout", str(ca.server_key),
         "-out", str(csr)], env)
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca.ca_cert), "-CAkey", str(ca_key),
         "-set_serial", "2", "-days", "2", "-extfile", str(ext), "-out", str(ca.server_cert)], env)
    return ca


@dataclass
class Store:
    """A copy of this host's /etc/ssl with the test CA added to both the bundle and
    the hashed folder: a system store of realistic size that trusts the proxy. And a
    copy of /etc/hosts that leads AWS_HOST to 127.0.0.1."""

    root: Path  # mounted over /etc/ssl
    bundle: Path
    folder: Path
    bundle_certs: int
    folder_entries: int
    hosts: Path  # mounted over /etc/hosts
    hosts_line: str


SYSTEM_SSL = Path("/etc/ssl")


def store_with(work: Path, ca: TestCa) -> Store | None:
    """None when this host has no Debian-style store (/etc/ssl/certs/ca-certificates.crt)."""
    if not (SYSTEM_SSL / "certs" / "ca-certificates.crt").is_file():
        return None
    root = work / "etc-ssl"
    # The hashed folder's links point into /usr/share/ca-certificates, which the
    # namespace keeps: copied as links. private/ holds keys, not roots. The test CA
    # has the real Amazon Root CA 1's hash: its link takes the first free suffix, as
    # c_rehash / update-ca-certificates would give it.
    shutil.copytree(SYSTEM_SSL, root, symlinks=True, ignore=shutil.ignore_patterns("private"))
    folder = root / "certs"
    pem = ca.ca_cert.read_bytes()
    (folder / "kmsenv-bench-ca.pem").write_bytes(pem)
    digest = run(["openssl", "x509", "-hash", "-noout", "-in", str(ca.ca_cert)], dict(os.environ)).stdout.decode().strip()
    suffix = 0
    while (folder / f"{digest}.{suffix}").exists() or (folder / f"{digest}.{suffix}").is_symlink():
        suffix += 1
    (folder / f"{digest}.{suffix}").symlink_to("kmsenv-bench-ca.pem")
    bundle = folder / "ca-certificates.crt"
    if bundle.is_symlink():  # write our own copy, not through the link into the host's
        target = bundle.resolve()
        bundle.unlink()
        shutil.copyfile(target, bundle)
    with bundle.open("ab") as f:
        f.write(b"\n" + pem)
    hosts, hosts_line = work / "etc-hosts", f"127.0.0.1 {AWS_HOST}"
    try:
        system_hosts = Path("/etc/hosts").read_text()
    except OSError:
        system_hosts = ""
    hosts.write_text(system_hosts + ("" if system_hosts.endswith("\n") or not system_hosts else "\n")
                     + hosts_line + "\n")
    return Store(root, bundle, folder, bundle.read_bytes().count(b"-----BEGIN CERTIFICATE-----"),
                 sum(1 for _ in folder.iterdir()), hosts, hosts_line)


class Proxy:
    def __init__(self, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def _json(self, method: str, path: str, obj=None) -> dict:
        body = json.dumps(obj).encode() if obj is not None else b""
        status, answer = http_call(self.port, method, path, body, {"Content-Type": "application/json"})
        if status != 200:
            raise BenchError(f"proxy {method} {path}: {status} {answer[:200]!r}")
        return json.loads(answer)

    def reset(self) -> None:
        self._json("POST", "/_proxy/reset")

    def counts(self) -> dict:
        return self._json("GET", "/_proxy/counts")

    def config(self, **config) -> None:
        self._json("POST", "/_proxy/config", config)


class Moto:
    """A few KMS JSON calls straight to moto (not through the proxy: not counted)."""

    def __init__(self, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def call(self, operation: str, body: dict) -> dict:
        status, answer = http_call(
            self.port,
            "POST",
            "/",
            json.dumps(body).encode(),
            {
                "Content-Type": "application/x-amz-json-1.1",
                "X-Amz-Target": f"TrentService.{operation}",
                # moto takes the region from the credential scope and checks no signature.
                "Authorization": f"AWS4-HMAC-SHA256 Credential=bench/20260101/{REGION}/kms/aws4_request, "
                "SignedHeaders=host, Signature=00",
            },
        )
        if status != 200:
            raise BenchError(f"KMS {operation}: {status} {answer[:300]!r}")
        return json.loads(answer)

    def create_key(self) -> str:
        return self.call("CreateKey", {"Description": "kmsenv bench"})["KeyMetadata"]["Arn"]

    def encrypt(self, key: str, plaintext: bytes, context: dict) -> str:
        body = {"KeyId": key, "Plaintext": base64.b64encode(plaintext).decode(), "EncryptionContext": context}
        return self.call("Encrypt", body)["CiphertextBlob"]


# ---------------------------------------------------------------------------
# Running things


def run(args: list[str], env: dict, *, stdin: bytes | None = None, cwd: Path | None = None,
        timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        args, input=stdin, env=env, cwd=cwd, capture_output=True, timeout=timeout,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise BenchError(
            f"{shlex.join(map(str, args))} exited {proc.returncode}: "
            f"{proc.stderr.decode(errors='replace').strip()[-800:]}"
        )
    return proc


def output_of(args: list[str], env: dict | None = None) -> str:
    try:
        proc = subprocess.run(args, capture_output=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc.__class__.__name__})"
    text = (proc.stdout or proc.stderr).decode(errors="replace").strip()
    return text.splitlines()[0] if text else "unavailable"


def find_fnox() -> str | None:
    """$FNOX, else fnox on PATH, else the one `make bench PEERS=all` installed."""
    given = os.environ.get("FNOX")
    if given:
        return given if os.access(given, os.X_OK) else None
    return shutil.which("fnox") or (str(FNOX_ROOT / "bin" / "fnox")
                                    if os.access(FNOX_ROOT / "bin" / "fnox", os.X_OK) else None)


def resolve_shim(name: str) -> str | None:
    """The real program behind a pyenv shim (the shim adds ~0.1 s of bash per call)."""
    path = shutil.which(name)
    if path and "/.pyenv/shims/" in path and shutil.which("pyenv"):
        real = subprocess.run(["pyenv", "which", name], capture_output=True, text=True)
        if real.returncode == 0 and real.stdout.strip():
            return real.stdout.strip()
    return path


# ---------------------------------------------------------------------------
# Measurements


@dataclass
class Row:
    group: str  # "base" | "latency"
    tool: str  # "true" | "kmsenv" | "boto3" | "awscli" | "dotenvx" | "fnox"
    kind: str  # "-" | "plain" | "envelope" | "direct" | "local keys"
    n: int | None
    label: str
    command: list[str] = field(default_factory=list)
    median_ms: float | None = None
    cpu_ms: float | None = None  # mean user + system CPU time per run
    min_ms: float | None = None
    max_ms: float | None = None
    warmup: int = 0
    runs: int = 0
    rss_kib: list[int] = field(default_factory=list)
    kms_calls: int | None = None  # one run, from the proxy's counts
    kms_decrypts: int | None = None
    kms_during_timing: int | None = None
    verified: str = ""
    error: str | None = None
    # Set on top of the bench's environment for this row (an endpoint, SSL_CERT_FILE).
    env: dict = field(default_factory=dict)
    # Put before every command of the row, hyperfine included: a mount namespace
    # with another /etc/ssl (see Bench.store_wrap).
    wrap: list[str] = field(default_factory=list)
    # Over HTTPS: every KMS call of the check run must have come over TLS.
    tls: bool = False
    # To AWS_HOST: one `-v` run must show kmsenv trusting only its first stage (the
    # store's Amazon Trust Services roots), as it does on a real host.
    aws_stage: bool = False
    # The allocator build measured (group "alloc").
    variant: str = ""

    @property
    def rss_max_mib(self) -> float | None:
        return max(self.rss_kib) / 1024 if self.rss_kib else None


class Bench:
    def __init__(self, plan: Plan, work: Path, out_dir: Path, kmsenv: Path, dotenvx: str | None):
        self.plan = plan
        self.work = work
        self.out_dir = out_dir
        self.kmsenv = kmsenv
        self.dotenvx = dotenvx
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.storms: list[dict] = []
        self.floors: dict[str, dict] = {}
        # N -> the typical-host target measured side by side (http, https).
        self.https_pairs: dict[int, dict] = {}
        # "plain" / "envelope" -> the growth target measured side by side (N=1, N=1000).
        self.growth_pairs: dict[str, dict] = {}
        self.generation: dict = {}
        self.values: list[tuple[str, str]] = []
        self.https_url: str | None = None
        self.aws_https_url: str | None = None
        # Trusts the test CA alone: the KMS floor's TLS calls (a client's own handshake).
        self.tls_client: ssl.SSLContext | None = None
        self.store: Store | None = None
        self.store_wrap: list[str] | None = None
        self.fnox: str | None = None
        # (name, binary) per allocator build, for the allocator rows (KMSENV_ALLOC_BINS).
        self.alloc_bins: list[tuple[str, Path]] = []
        # What this run measures (--only): all of SECTIONS by default.
        self.sections: set[str] = set(SECTIONS)
        self.hyperfine = shutil.which("hyperfine")
        self.gnu_time = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
        if not self.hyperfine:
            raise BenchError("hyperfine not found (make bench installs it with apt-get)")
        if not self.gnu_time:
            raise BenchError("/usr/bin/time (GNU time) not found (make bench installs it with apt-get)")

    # -- setup -------------------------------------------------------------

    def start(self) -> None:
        self.moto = Moto(start_moto(self.work))
        ca = None
        if shutil.which("openssl"):
            ca = make_test_ca(self.work / "tls")
        else:
            self.notes.append("HTTPS rows: the openssl CLI is not installed (it makes the test CA), so not measured.")
        self.proxy = Proxy(start_proxy(self.work, self.moto.port, ca))
        log(f"moto_server on {self.moto.url}, fault proxy on {self.proxy.url}" + (" (and https)" if ca else ""))
        if ca:
            self.https_url = f"https://127.0.0.1:{self.proxy.port}"
            self.aws_https_url = f"https://{AWS_HOST}:{self.proxy.port}"
            self.tls_client = ssl.create_default_context(cafile=str(ca.ca_cert))
            self.store = store_with(self.work, ca)
            self.store_wrap = self.mount_store() if self.store else None
            if not self.store:
                self.notes.append(f"HTTPS, system store: no {SYSTEM_SSL}/certs/ca-certificates.crt on this host, so not measured.")
        # Everything talks to loopback: no proxy (a NO_PROXY that lists localhost
        # would not list AWS_HOST), and no SSL_CERT_* (system store rows set none).
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KMSENV_", "DOTENV_"))
                and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
                and k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
        base.update(
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_REGION=REGION,
            AWS_DEFAULT_REGION=REGION,
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE=str(self.work / "no-aws-config"),
            AWS_SHARED_CREDENTIALS_FILE=str(self.work / "no-aws-credentials"),
            AWS_PAGER="",
        )
        aws = resolve_shim("aws")
        if aws:
            base["AWS_CLI"] = aws
        # Everything measured goes through the proxy; files are made against moto directly.
        self.env = {**base, "AWS_ENDPOINT_URL_KMS": self.proxy.url}
        self.make_env = {**base, "AWS_ENDPOINT_URL_KMS": self.moto.url}
        self.key = self.moto.create_key()
        log(f"KMS key {self.key}")

    def mount_store(self) -> list[str] | None:
        """The prefix that runs a command in a mount namespace of its own, where the
        store copy is bind-mounted over /etc/ssl and the hosts copy over /etc/hosts:
        kmsenv then finds the test CA where it finds a host's roots, with no
        SSL_CERT_* set, and AWS_HOST at the proxy's address. `unshare -m` as root,
        else `unshare -rm` (a user namespace, where it may mount). None when neither
        works."""
        store = self.store
        mount = ["sh", "-c", 'mount --bind "$0" /etc/ssl && mount --bind "$1" /etc/hosts && shift && exec "$@"',
                 str(store.root), str(store.hosts)]
        # Inside, /etc/ssl's bundle must be the copy (one certificate more than the
        # host's) and /etc/hosts must hold the line for AWS_HOST.
        probe = ["sh", "-c", 'grep -c -- "-----BEGIN CERTIFICATE-----" "$0" && grep -cxF -- "$1" /etc/hosts',
                 str(SYSTEM_SSL / "certs" / "ca-certificates.crt"), store.hosts_line]
        tried = []
        for unshare in (["unshare", "-m"], ["unshare", "-rm"]) if os.geteuid() == 0 else (["unshare", "-rm"],):
            wrap = [*unshare, "--", *mount]
            proc = run([*wrap, *probe], dict(os.environ), check=False)
            if proc.returncode == 0 and proc.stdout.split() == [str(store.bundle_certs).encode(), b"1"]:
                return wrap
            tried.append(f"`{' '.join(unshare)}`: {proc.stderr.decode(errors='replace').strip()[:200] or proc.returncode}")
        self.notes.append("HTTPS, system store: could not mount the store copy over /etc/ssl and the hosts copy over "
                          "/etc/hosts (" + "; ".join(tried) + "), so not measured.")
        return None

    def kms(self, *args: str, file: Path, stdin: bytes | None = None) -> None:
        run([str(self.kmsenv), "-q", "-f", str(file), *args], self.make_env, stdin=stdin)

    def make_files(self) -> None:
        p = self.plan
        max_n = max(p.ns + p.direct_ns + [p.storm_direct_values])
        self.values = [(f"BENCH_VAR_{i:04d}", secrets.token_urlsafe(24)) for i in range(max_n)]
        self.files: dict[tuple[str, int], Path] = {}
        started = time.monotonic()

        for n in sorted(set(p.ns)):
            dotenv = self.work / f"values-{n}.env"
            dotenv.write_text("".join(f"{k}={v}\n" for k, v in self.values[:n]))
            plain = self.work / f"plain-{n}.toml"
            plain.write_text("[kmsenv]\nversion = 1\n")
            self.kms("import", "--plain", str(dotenv), file=plain)
            self.files["plain", n] = plain
            envelope = self.work / f"envelope-{n}.toml"
            self.kms("init", "--key", self.key, "--context", "=".join(CONTEXT), file=envelope)
            self.kms("import", str(dotenv), file=envelope)
            self.files["envelope", n] = envelope
        log(f"plain and envelope files (kmsenv init/import) for N={p.ns} in {time.monotonic() - started:.1f} s")

        # Direct values: two ways to make them; time both on the same N, use the faster
        # (a partial run without the peers' rows just encrypts).
        peers = bool(self.sections & {"base", "latency"})
        faster = "encrypt"
        self.generation = {"used": faster}
        if peers:
            probe_n = 10
            started = time.monotonic()
            via_set = self.work / f"direct-{probe_n}-via-set.toml"
            via_set.write_text("[kmsenv]\nversion = 1\n")
            for name, value in self.values[:probe_n]:
                self.kms("set", "--kms", "--key", self.key, name, file=via_set, stdin=value.encode())
            t_set = time.monotonic() - started
            started = time.monotonic()
            via_encrypt = self.write_direct(probe_n, self.work / f"direct-{probe_n}-via-encrypt.toml")
            t_encrypt = time.monotonic() - started
            run([str(self.kmsenv), "-q", "-f", str(via_set), "check"], self.make_env)
            run([str(self.kmsenv), "-q", "-f", str(via_encrypt), "check"], self.make_env)
            faster = "encrypt" if t_encrypt <= t_set else "set"
            self.generation = {
                "probe_n": probe_n,
                "set_s": t_set,
                "encrypt_s": t_encrypt,
                "used": faster,
            }
            log(f"direct values, N={probe_n}: `kmsenv set --kms` per value {t_set:.2f} s, "
                f"KMS Encrypt + writing the TOML {t_encrypt:.2f} s: using {faster}")

        started = time.monotonic()
        direct_ns = sorted(set(p.direct_ns) | set(n for n in p.ns if n <= 100) | {p.storm_direct_values}
                           | set(p.latency_direct_ns) | set(p.boto3_latency_ns) | set(p.awscli_ns)
                           | set(p.ns))  # the boto3 peer reads direct files at every N
        if not peers:
            direct_ns = [p.storm_direct_values] if "storm" in self.sections else []
        for n in direct_ns:
            path = self.work / f"direct-{n}.toml"
            if faster == "encrypt":
                self.write_direct(n, path)
            else:
                path.write_text("[kmsenv]\nversion = 1\n")
                for name, value in self.values[:n]:
                    self.kms("set", "--kms", "--key", self.key, name, file=path, stdin=value.encode())
            self.files["direct", n] = path
        self.generation["direct_ns"] = direct_ns
        self.generation["direct_all_s"] = time.monotonic() - started
        log(f"direct files for N={direct_ns} in {self.generation['direct_all_s']:.1f} s")

        for n in sorted(set(p.awscli_ns)) if peers else []:
            # The awscli loop reads NAME<TAB>KEY<TAB>CIPHERTEXT lines: the direct file's values.
            with open(self.files["direct", n], "rb") as f:
                entries = tomllib.load(f)["env"]
            tsv = self.work / f"direct-{n}.tsv"
            tsv.write_text("".join(f"{name}\t{e['key']}\t{e['kms']}\n" for name, e in entries.items()))
            self.files["awscli", n] = tsv

        if self.dotenvx and peers:
            started = time.monotonic()
            for n in sorted(set(p.ns)):
                folder = self.work / f"dotenvx-{n}"
                folder.mkdir()
                shutil.copy(self.work / f"values-{n}.env", folder / ".env")
                encrypt_started = time.monotonic()
                run([self.dotenvx, "encrypt", "-f", ".env"], self.make_env, cwd=folder)
                self.generation.setdefault("dotenvx_encrypt_s", {})[n] = time.monotonic() - encrypt_started
                if "encrypted:" not in (folder / ".env").read_text() or not (folder / ".env.keys").exists():
                    raise BenchError(f"dotenvx encrypt did not encrypt {folder / '.env'}")
                self.files["dotenvx", n] = folder / ".env"
            log(f"dotenvx files (dotenvx encrypt) for N={p.ns} in {time.monotonic() - started:.1f} s")

    def write_direct(self, n: int, path: Path) -> Path:
        blobs = [(name, self.moto.encrypt(self.key, value.encode(), {"kmsenv:var": name}))
                 for name, value in self.values[:n]]
        lines = ["[kmsenv]", "version = 1", "", "[env]"]
        for name, blob in blobs:
            lines.append(f'{name} = {{ kms = "{blob}", key = "{self.key}", context = {{ "kmsenv:var" = "{name}" }} }}')
        path.write_text("\n".join(lines) + "\n")
        return path

    # -- one measurement ---------------------------------------------------

    def check_env(self, row: Row, output: bytes) -> str:
        """The command's `env` output holds the N expected values."""
        if row.n is None or row.kind in ("-",):
            return "n/a"
        got = {}
        for line in output.decode(errors="replace").splitlines():
            name, sep, value = line.partition("=")
            if sep:
                got[name] = value
        wrong = [name for name, value in self.values[: row.n] if got.get(name) != value]
        if wrong:
            raise BenchError(f"{row.label}: {len(wrong)} of {row.n} variables missing or wrong (first: {wrong[0]})")
        return f"all {row.n} values ok"

    def measure(self, row: Row, *, slow_peer: bool = False) -> Row:
        p = self.plan
        self.rows.append(row)
        cmd = row.command
        assert cmd[-1] == "true", cmd
        probe = cmd if row.tool == "true" else [*cmd[:-1], "env"]
        env = {**self.env, **row.env}
        try:
            # 1. One run with `env` instead of `true`: the values arrived, and the KMS
            #    calls of one run (reset before, read after).
            #    Under GNU time: its peak RSS is the first sample.
            rss_file = self.work / "rss.txt"
            self.proxy.reset()
            started = time.monotonic()
            proc = run([*row.wrap, self.gnu_time, "-f", "%M", "-o", str(rss_file), *probe], env, timeout=900)
            one_run = time.monotonic() - started
            counts = self.proxy.counts()
            row.kms_calls = counts["total"]
            row.kms_decrypts = counts["ops"].get("Decrypt", 0)
            row.verified = self.check_env(row, proc.stdout)
            if row.tls:
                if not row.kms_calls or counts.get("tls", 0) != row.kms_calls:
                    raise BenchError(f"{row.label}: {counts.get('tls', 0)} of {row.kms_calls} KMS calls came over TLS")
                row.verified += ", over TLS"
            if row.aws_stage:
                self.check_aws_stage(row, env)
                row.verified += ", first TLS stage only (the store's Amazon roots)"
            row.rss_kib.append(int(rss_file.read_text().strip().splitlines()[-1]))

            # 2. hyperfine: median wall time. Slow peers get fewer runs.
            if slow_peer and one_run > GLACIAL_RUN_S:
                row.warmup, row.runs, rss_runs = p.warmup_glacial, p.runs_glacial, p.rss_runs_very_slow
            elif slow_peer and one_run > VERY_SLOW_RUN_S:
                row.warmup, row.runs, rss_runs = p.warmup_slow, p.runs_very_slow, p.rss_runs_very_slow
            elif slow_peer and one_run > SLOW_RUN_S:
                row.warmup, row.runs, rss_runs = p.warmup_slow, p.runs_slow, p.rss_runs_slow
            elif row.tool in ("true", "kmsenv"):
                runs = p.runs_fast if one_run < FAST_SLOW_RUN_S else p.runs_fast_slow
                row.warmup, row.runs, rss_runs = p.warmup, runs, p.rss_runs_fast
            else:
                row.warmup, row.runs, rss_runs = p.warmup, p.runs_peer, p.rss_runs_peer
            slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{row.group}-{row.label}").strip("-").lower()
            export = self.out_dir / f"{slug}.json"
            self.proxy.reset()
            run(
                [*row.wrap, self.hyperfine, "-N", "--warmup", str(row.warmup), "--runs", str(row.runs),
                 "--style", "none", "--export-json", str(export), "--command-name", row.label,
                 shlex.join(cmd)],
                env,
                timeout=1800,
            )
            row.kms_during_timing = self.proxy.counts()["total"]
            result = json.loads(export.read_text())["results"][0]
            row.median_ms = result["median"] * 1000
            row.min_ms = result["min"] * 1000
            row.max_ms = result["max"] * 1000
            row.cpu_ms = (result["user"] + result["system"]) * 1000

            # 3. Peak RSS, GNU time's %M (max RSS of the process, kept across execve:
            #    kmsenv's own peak before it became `true`). Several runs, the max kept.
            for _ in range(rss_runs):
                run([*row.wrap, self.gnu_time, "-f", "%M", "-o", str(rss_file), *cmd], env, timeout=900)
                row.rss_kib.append(int(rss_file.read_text().strip().splitlines()[-1]))
        except (BenchError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as exc:
            row.error = str(exc)[:500]
            log(f"FAILED {row.label}: {row.error}")
            return row
        log(
            f"{row.group:7} {row.label:42} median {row.median_ms:8.2f} ms  "
            f"(min {row.min_ms:.2f}, CPU {row.cpu_ms:.1f} ms, {row.warmup}+{row.runs} runs)  "
            f"RSS max {row.rss_max_mib:6.2f} MiB  KMS calls/run {row.kms_calls}"
        )
        return row

    def check_aws_stage(self, row: Row, env: dict) -> None:
        """kmsenv's `-v` names the roots of each TLS stage it tries: one line, for the
        Amazon Trust Services stage. A second line would mean the handshake failed
        there and the row timed the whole store (a stand-in CA that is not one)."""
        cmd = [row.command[0], "-v", *row.command[1:]]
        proc = run([*row.wrap, *cmd], env, timeout=900)
        stages = [line for line in proc.stderr.decode(errors="replace").splitlines() if line.startswith("kmsenv: TLS:")]
        if len(stages) != 1 or not stages[0].endswith("(an AWS endpoint)"):
            raise BenchError(f"{row.label}: expected kmsenv -v to trust only the store's Amazon Trust Services roots, "
                             f"got {stages or 'no TLS line'}")

    # -- the local KMS alone ------------------------------------------------

    def measure_kms_floor(self, group: str) -> None:
        """What moto + the proxy cost without kmsenv: Decrypt calls from this process
        (http.client, a fresh connection per call, as a starting process has)."""
        p = self.plan
        blob = self.moto.encrypt(self.key, b"floor", {"kmsenv:var": "FLOOR"})
        body = json.dumps({"CiphertextBlob": blob, "KeyId": self.key,
                           "EncryptionContext": {"kmsenv:var": "FLOOR"}}).encode()
        headers = {
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "TrentService.Decrypt",
            "Authorization": f"AWS4-HMAC-SHA256 Credential=bench/20260101/{REGION}/kms/aws4_request, "
            "SignedHeaders=host, Signature=00",
        }

        def one(port: int, tls: ssl.SSLContext | None = None) -> float:
            started = time.perf_counter()
            status, answer = http_call(port, "POST", "/", body, headers, tls=tls)
            if status != 200:
                raise BenchError(f"Decrypt for the KMS floor: {status} {answer[:200]!r}")
            return time.perf_counter() - started

        def burst(port: int, count: int) -> float:
            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
                list(pool.map(lambda _: one(port), range(count)))
            return time.perf_counter() - started

        floor = {"group": group}
        if group == "base":
            floor["moto_single_ms"] = statistics.median(one(self.moto.port) for _ in range(p.floor_samples)) * 1000
        floor["proxy_single_ms"] = statistics.median(one(self.proxy.port) for _ in range(p.floor_samples)) * 1000
        if group == "base" and self.tls_client:
            floor["proxy_tls_single_ms"] = statistics.median(
                one(self.proxy.port, self.tls_client) for _ in range(p.floor_samples)) * 1000
        floor["proxy_50_ms"] = statistics.median(burst(self.proxy.port, 50) for _ in range(5)) * 1000
        if group == "base":
            done = 0
            stop = time.monotonic() + 3.0

            def worker(_: int) -> int:
                n = 0
                while time.monotonic() < stop:
                    one(self.proxy.port)
                    n += 1
                return n

            started = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
                done = sum(pool.map(worker, range(50)))
            floor["capacity_rps"] = done / (time.monotonic() - started)
        self.floors[group] = floor
        log(f"local KMS ({group}): " + ", ".join(f"{k} {v:.1f}" for k, v in floor.items() if k != "group"))

    # -- the cases ---------------------------------------------------------

    def kmsenv_cmd(self, file: Path, *extra: str) -> list[str]:
        return [str(self.kmsenv), "-f", str(file), *extra, "exec", "--", "true"]

    def measure_base(self) -> None:
        p = self.plan
        self.measure_kms_floor("base")
        self.measure(Row("base", "true", "-", None, "true (floor)", ["true"]))
        for n in p.ns:
            self.measure(Row("base", "kmsenv", "plain", n, f"kmsenv plain N={n}", self.kmsenv_cmd(self.files["plain", n])))
        for n in p.ns:
            self.measure(Row("base", "kmsenv", "envelope", n, f"kmsenv envelope N={n}",
                             self.kmsenv_cmd(self.files["envelope", n])))
        for n in p.direct_ns:
            self.measure(Row("base", "kmsenv", "direct", n, f"kmsenv direct N={n}",
                             self.kmsenv_cmd(self.files["direct", n])))
        self.measure_growth_pairs()
        self.measure_peers("base", p.ns, p.awscli_ns, p.ns)

    def measure_peers(self, group: str, boto3_ns: list[int], awscli_ns: list[int], dotenvx_ns: list[int]) -> None:
        for n in boto3_ns:
            self.measure(Row(group, "boto3", "direct", n, f"boto3 entrypoint N={n}",
                             [sys.executable, str(PEERS / "boto3_entrypoint.py"), str(self.files["direct", n]),
                              "--", "true"]), slow_peer=True)
        for n in awscli_ns:
            self.measure(Row(group, "awscli", "direct", n, f"awscli loop N={n}",
                             [str(PEERS / "awscli_loop.sh"), str(self.files["awscli", n]), "--", "true"]),
                         slow_peer=True)
        if self.dotenvx:
            for n in dotenvx_ns:
                self.measure(Row(group, "dotenvx", "local keys", n, f"dotenvx run N={n}",
                                 [self.dotenvx, "run", "-f", str(self.files["dotenvx", n]), "--", "true"]),
                             slow_peer=True)
        self.measure_fnox(group)

    def measure_fnox(self, group: str) -> None:
        fnox = self.fnox
        if group != "base":
            return
        if not fnox:
            self.notes.append(f"fnox: not installed (not $FNOX, on PATH or in {FNOX_ROOT.relative_to(ROOT)}/bin; "
                              "`make bench PEERS=all` installs it), so not measured.")
            log("fnox: not installed")
            return
        # fnox's aws-kms provider: one Encrypt per `fnox set`, one Decrypt per secret at exec.
        for n in self.plan.fnox_ns:
            folder = self.work / f"fnox-{n}"
            folder.mkdir(exist_ok=True)
            (folder / "fnox.toml").write_text(
                f'[providers.kms]\ntype = "aws-kms"\nkey_id = "{self.key}"\nregion = "{REGION}"\n'
            )
            try:
                for name, value in self.values[:n]:
                    # `--` first: a random value may start with `-` (fnox would take it for a flag).
                    run([fnox, "set", "--provider", "kms", "--", name, value], self.env, cwd=folder)
            except BenchError as exc:
                self.notes.append(f"fnox: installed ({output_of([fnox, '--version'])}) but setup failed: {exc}")
                log(f"fnox setup failed: {exc}")
                return
            row = Row(group, "fnox", "direct", n, f"fnox exec N={n}",
                      [fnox, "--config", str(folder / "fnox.toml"), "exec", "--", "true"])
            self.measure(row, slow_peer=True)

    def measure_latency(self) -> None:
        p = self.plan
        self.proxy.config(latency_ms=p.latency_ms)
        try:
            self.measure_kms_floor("latency")
            for n in p.latency_envelope_ns:
                self.measure(Row("latency", "kmsenv", "envelope", n, f"kmsenv envelope N={n}",
                                 self.kmsenv_cmd(self.files["envelope", n])))
            for n in p.latency_direct_ns:
                self.measure(Row("latency", "kmsenv", "direct", n, f"kmsenv direct N={n}",
                                 self.kmsenv_cmd(self.files["direct", n])))
            for n in p.boto3_latency_ns:
                self.measure(Row("latency", "boto3", "direct", n, f"boto3 entrypoint N={n}",
                                 [sys.executable, str(PEERS / "boto3_entrypoint.py"), str(self.files["direct", n]),
                                  "--", "true"]), slow_peer=True)
        finally:
            self.proxy.config(latency_ms=0)

    # -- HTTPS ---------------------------------------------------------------

    def measure_https(self) -> None:
        """Envelope files over HTTPS (the proxy's TLS mode, certificate from the test
        CA): to AWS_HOST through a system store of realistic size (the store copy
        over /etc/ssl, no SSL_CERT_*: a typical host, whose kmsenv tries the store's
        Amazon roots first); to 127.0.0.1 (a custom endpoint: the whole store) the
        same way, through SSL_CERT_FILE = that bundle, and through SSL_CERT_FILE and
        SSL_CERT_DIR both."""
        if not self.https_url:
            return
        endpoint = {"AWS_ENDPOINT_URL_KMS": self.https_url}
        aws_endpoint = {"AWS_ENDPOINT_URL_KMS": self.aws_https_url}
        for n in self.plan.https_ns:
            cmd = self.kmsenv_cmd(self.files["envelope", n])
            if self.store_wrap:
                self.measure(Row("https", "kmsenv", "envelope", n,
                                 f"kmsenv envelope N={n}, https to {AWS_HOST}, system store",
                                 cmd, env=aws_endpoint, wrap=self.store_wrap, tls=True, aws_stage=True))
                self.measure(Row("https", "kmsenv", "envelope", n, f"kmsenv envelope N={n}, https, system store",
                                 cmd, env=endpoint, wrap=self.store_wrap, tls=True))
                self.measure_https_pair(n)
            if self.store:
                bundle = {"SSL_CERT_FILE": str(self.store.bundle)}
                self.measure(Row("https", "kmsenv", "envelope", n, f"kmsenv envelope N={n}, https, SSL_CERT_FILE",
                                 cmd, env={**endpoint, **bundle}, tls=True))
                self.measure(Row("https", "kmsenv", "envelope", n,
                                 f"kmsenv envelope N={n}, https, SSL_CERT_FILE + SSL_CERT_DIR", cmd,
                                 env={**endpoint, **bundle, "SSL_CERT_DIR": str(self.store.folder)}, tls=True))

    def side_by_side(self, slug: str, first: list[str], second: list[str],
                     wrap: list[str]) -> list[tuple[dict, dict]] | None:
        """Rounds of one hyperfine call each timing `first` and `second` side by side
        (which goes first alternates): hyperfine's result for each, per round; None
        (logged) when a round fails.

        For the targets that compare two commands. Rows are timed minutes apart, and
        on this shared machine the same binary moves between such runs by more than
        those targets allow (bench/RESULTS.md of b0ee927 and 56547fe); within a round
        both commands meet the same load."""
        p = self.plan
        rounds = []
        try:
            for r in range(p.pair_rounds):
                order = [("first", first), ("second", second)]
                if r % 2:
                    order.reverse()
                export = self.out_dir / f"{slug}-round{r}.json"
                args = [*wrap, self.hyperfine, "-N", "--warmup", "2", "--runs", str(p.pair_runs),
                        "--style", "none", "--export-json", str(export)]
                for name, cmd in order:
                    args += ["--command-name", name, shlex.join(cmd)]
                run(args, self.env, timeout=900)
                got = {res["command"]: res for res in json.loads(export.read_text())["results"]}
                rounds.append((got["first"], got["second"]))
        except (BenchError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as exc:
            log(f"FAILED {slug}: {str(exc)[:300]}")
            return None
        return rounds

    def measure_https_pair(self, n: int) -> None:
        """The typical-host target, measured side by side: the http:// and the
        https://AWS_HOST command (`--endpoint-url`, the same file, in the store's
        mount namespace), the difference of each round's medians and the median of
        those. The CPU difference is kmsenv's own cost of TLS: the server's
        handshake runs in the proxy, a process hyperfine does not measure."""
        http = [str(self.kmsenv), "--endpoint-url", self.proxy.url, *self.kmsenv_cmd(self.files["envelope", n])[1:]]
        https = [str(self.kmsenv), "--endpoint-url", self.aws_https_url, *http[3:]]
        rounds = self.side_by_side(f"https-pair-n{n}", http, https, self.store_wrap)
        if rounds is None:
            return
        wall = [(b["median"] - a["median"]) * 1000 for a, b in rounds]
        cpu = [(b["user"] + b["system"] - a["user"] - a["system"]) * 1000 for a, b in rounds]
        self.https_pairs[n] = pair = {"runs": self.plan.pair_runs, "wall": Spread(wall), "cpu": Spread(cpu)}
        log(f"https pair N={n}: https − http {pair['wall'].text('{:+.2f} ms')}, CPU {pair['cpu'].text('{:+.2f} ms')}")

    def measure_growth_pairs(self) -> None:
        """The growth targets, measured side by side: N=1 and N=1000 of each kind,
        the ratio of each round's medians and the median of those."""
        ns = self.plan.ns
        if 1 not in ns or 1000 not in ns:
            return
        for kind in ("plain", "envelope"):
            small, large = (self.kmsenv_cmd(self.files[kind, n]) for n in (1, 1000))
            rounds = self.side_by_side(f"growth-{kind}", small, large, [])
            if rounds is None:
                continue
            self.growth_pairs[kind] = pair = {
                "runs": self.plan.pair_runs,
                "ratio": Spread([b["median"] / a["median"] for a, b in rounds]),
                "small_ms": statistics.median(a["median"] for a, _ in rounds) * 1000,
                "large_ms": statistics.median(b["median"] for _, b in rounds) * 1000,
            }
            log(f"growth pair {kind}: N=1000 / N=1 {pair['ratio'].text('{:.2f}×')}")

    # -- allocators ----------------------------------------------------------

    def measure_allocators(self) -> None:
        """The same commit built with each allocator (KMSENV_ALLOC_BINS), on plain-only
        and envelope files at the smallest and largest N, one build after the other at
        each N so that load on the machine hits them alike."""
        if not self.alloc_bins:
            return
        ns = sorted({min(self.plan.ns), max(self.plan.ns)})
        for kind in ("plain", "envelope"):
            for n in ns:
                for name, binary in self.alloc_bins:
                    self.measure(Row("alloc", "kmsenv", kind, n, f"{name}: {kind} N={n}",
                                     [str(binary), "-f", str(self.files[kind, n]), "exec", "--", "true"],
                                     variant=name))

    # -- storm -------------------------------------------------------------

    def storm(self, kind: str, file: Path, values: int) -> None:
        p = self.plan
        cmd = [str(self.kmsenv), "--timeout", str(p.storm_timeout_s), "-f", str(file), "exec", "--", "true"]

        def one(_: int) -> tuple[int, float, bytes]:
            started = time.perf_counter()
            try:
                proc = subprocess.run(cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, timeout=p.storm_timeout_s + 30)
            except subprocess.TimeoutExpired:  # kmsenv's own deadline did not hold: killed, counted as failed
                return -9, time.perf_counter() - started, b"killed by the bench: no exit within --timeout + 30 s"
            return proc.returncode, time.perf_counter() - started, proc.stderr

        self.proxy.reset()
        self.proxy.config(quota_rps=p.storm_quota_rps, quota_burst=p.storm_quota_burst)
        started = time.monotonic()
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=p.storm_concurrency) as pool:
                results = list(pool.map(one, range(p.storm_procs)))
        finally:
            wall = time.monotonic() - started
            counts = self.proxy.counts()
            self.proxy.config(quota_rps=None)
        ok = sorted(t for rc, t, _ in results if rc == 0)
        failed = [(rc, t, err) for rc, t, err in results if rc != 0]
        codes: dict[int, int] = {}
        for rc, _, _ in failed:
            codes[rc] = codes.get(rc, 0) + 1
        throttled_errors = sum(1 for _, _, err in failed if b"ThrottlingException" in err)
        storm = {
            "kind": kind,
            "values": values,
            "procs": p.storm_procs,
            "concurrency": p.storm_concurrency,
            "started": len(ok),
            "failed": len(failed),
            "failed_codes": codes,
            "failed_throttling": throttled_errors,
            "p50_ms": percentile(ok, 50) * 1000 if ok else None,
            "p99_ms": percentile(ok, 99) * 1000 if ok else None,
            "max_ms": ok[-1] * 1000 if ok else None,
            "fail_p50_ms": percentile(sorted(t for _, t, _ in failed), 50) * 1000 if failed else None,
            "wall_s": wall,
            "kms_total": counts["total"],
            "kms_decrypt": counts["ops"].get("Decrypt", 0),
            "throttled": counts["throttled"],
            "sample_error": next((err.decode(errors="replace").strip().splitlines()[0]
                                  for _, _, err in failed if err.strip()), ""),
        }
        self.storms.append(storm)
        log(
            f"storm {kind}: {storm['started']}/{storm['procs']} exec'd, p50 {fmt(storm['p50_ms'])} ms, "
            f"p99 {fmt(storm['p99_ms'])} ms, KMS calls {storm['kms_total']}, throttled {storm['throttled']}, "
            f"{wall:.1f} s"
        )

    # -- many entries: export next to list ----------------------------------

    def measure_scale(self) -> None:
        """`kmsenv export` and `kmsenv list` of one plain file of scale_n entries
        (no KMS, no MAC). `list` reads, parses and prints every name; `export`
        does the same plus the merge and the quoting of every value, so a ratio
        near 1× means export is linear (it was quadratic: 33 s at 200 000)."""
        n = self.plan.scale_n
        path = self.work / f"scale-plain-{n}.toml"
        with path.open("w") as f:
            f.write("[kmsenv]\nversion = 1\n\n[env]\n")
            for i in range(n):
                f.write(f'SCALE_VAR_{i:06d} = "value-{i:06d}-{secrets.token_hex(8)}"\n')
        for label, args in (("list", ["list"]), ("export --format dotenv", ["export", "--format", "dotenv"])):
            row = Row("scale", "kmsenv", "plain", n, f"kmsenv {label}", [str(self.kmsenv), "-f", str(path), *args])
            self.measure_output(row, expect_lines=n)

    def measure_output(self, row: Row, *, expect_lines: int) -> Row:
        """Like `measure`, for a command whose output is the result (no exec):
        one run under GNU time (peak RSS; at least expect_lines lines out), then
        hyperfine with scale_warmup + scale_runs runs."""
        p = self.plan
        self.rows.append(row)
        try:
            rss_file = self.work / "rss.txt"
            proc = run([self.gnu_time, "-f", "%M", "-o", str(rss_file), *row.command], self.env, timeout=900)
            lines = proc.stdout.count(b"\n")
            if lines < expect_lines:
                raise BenchError(f"{row.label}: {lines} lines of output, expected at least {expect_lines}")
            row.verified = f"{lines} lines"
            row.kms_calls = row.kms_decrypts = 0
            row.rss_kib.append(int(rss_file.read_text().strip().splitlines()[-1]))
            row.warmup, row.runs = p.scale_warmup, p.scale_runs
            slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{row.group}-{row.label}").strip("-").lower()
            export = self.out_dir / f"{slug}.json"
            run(
                [self.hyperfine, "-N", "--warmup", str(row.warmup), "--runs", str(row.runs),
                 "--style", "none", "--output", "null", "--export-json", str(export),
                 "--command-name", row.label, shlex.join(row.command)],
                self.env,
                timeout=1800,
            )
            result = json.loads(export.read_text())["results"][0]
            row.median_ms = result["median"] * 1000
            row.min_ms = result["min"] * 1000
            row.max_ms = result["max"] * 1000
            row.cpu_ms = (result["user"] + result["system"]) * 1000
        except (BenchError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as exc:
            row.error = str(exc)[:500]
            log(f"FAILED {row.label}: {row.error}")
            return row
        log(f"{row.group:7} {row.label:42} median {row.median_ms:8.2f} ms  (min {row.min_ms:.2f}, "
            f"CPU {row.cpu_ms:.1f} ms, {row.warmup}+{row.runs} runs)  RSS max {row.rss_max_mib:6.2f} MiB")
        return row

    def measure_storms(self) -> None:
        p = self.plan
        self.storm("envelope", self.files["envelope", 100 if ("envelope", 100) in self.files else p.ns[0]],
                   100 if ("envelope", 100) in self.files else p.ns[0])
        self.storm("direct", self.files["direct", p.storm_direct_values], p.storm_direct_values)


class Spread:
    """Per-round figures of a side-by-side measurement: their median and range."""

    def __init__(self, values: list[float]):
        ordered = sorted(values)
        self.count, self.low, self.high = len(ordered), ordered[0], ordered[-1]
        self.median = statistics.median(ordered)

    def text(self, form: str) -> str:
        """E.g. `median +2.10 ms over 10 rounds (+1.47 ms … +3.16 ms)` for form `{:+.2f} ms`."""
        return (f"median {form.format(self.median)} over {self.count} rounds "
                f"({form.format(self.low)} … {form.format(self.high)})")


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        raise ValueError("empty")
    rank = max(1, min(len(sorted_values), -(-len(sorted_values) * pct // 100)))
    return sorted_values[int(rank) - 1]


def fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


# ---------------------------------------------------------------------------
# Report


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / MIB:.1f} GiB"
    except (OSError, ValueError):
        pass
    return {
        "nproc": output_of(["nproc"]),
        "cpu": cpu,
        "kernel": f"{platform.system()} {platform.release()}",
        "memory": mem,
    }


def binary_info(path: Path) -> dict:
    size = path.stat().st_size
    described = output_of(["file", "-b", str(path)]) if shutil.which("file") else "unknown (no `file`)"
    return {"path": path, "size": size, "mib": size / MIB, "file": described}


def git_info() -> str:
    head = output_of(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return head + (" (with uncommitted changes to tracked files)" if dirty else "")


class Report:
    def __init__(self, bench: Bench, started: datetime.datetime, elapsed_s: float, info: dict):
        self.b = bench
        self.started = started
        self.elapsed_s = elapsed_s
        self.info = info
        self.targets: list[tuple[bool | None, str]] = []
        # Figures worth a line next to the targets that no target covers.
        self.reported: list[str] = []

    def find(self, group: str, tool: str, kind: str, n: int | None) -> Row | None:
        for row in self.b.rows:
            if (row.group, row.tool, row.kind, row.n) == (group, tool, kind, n) and row.error is None:
                return row
        return None

    def ratio(self, row: Row, kind: str) -> str:
        ref = self.find(row.group, "kmsenv", kind, row.n)
        if ref is None or row.median_ms is None or not ref.median_ms:
            return "–"
        return f"{row.median_ms / ref.median_ms:.2f}×"

    def table(self, group: str) -> list[str]:
        lines = [
            "| command | N | median ms | min ms | CPU ms | × kmsenv envelope | × kmsenv direct | peak RSS MiB | KMS calls/run | runs |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for row in self.b.rows:
            if row.group != group:
                continue
            n = "–" if row.n is None else str(row.n)
            if row.error:
                lines.append(f"| {row.label} | {n} | failed: {row.error[:120]} | | | | | | | |")
                continue
            calls = "0" if row.kms_calls == 0 else f"{row.kms_calls} ({row.kms_decrypts} Decrypt)"
            lines.append(
                f"| {row.label} | {n} | {row.median_ms:.2f} | {row.min_ms:.2f} | {row.cpu_ms:.1f} | {self.ratio(row, 'envelope')} | "
                f"{self.ratio(row, 'direct')} | {row.rss_max_mib:.2f} | {calls} | "
                f"{row.warmup}+{row.runs}, RSS ×{len(row.rss_kib)} |"
            )
        return lines

    def https_table(self) -> list[str]:
        rows = [r for r in self.b.rows if r.group == "https"]
        store = self.b.store
        if not rows:
            return []
        wrap = " ".join(self.b.store_wrap[:2]) if self.b.store_wrap else "unshare"
        lines = [
            "",
            "## HTTPS",
            "",
            "The same envelope files over HTTPS: the fault proxy serving TLS, no added latency, with a server "
            f"certificate for `localhost`, `127.0.0.1` and `{AWS_HOST}` from a throwaway CA made with `openssl`. "
            "The CA stands in for Amazon Root CA 1: its subject is that root's, byte for byte (`C=US, O=Amazon, "
            "CN=Amazon Root CA 1`, PrintableStrings), so its hash link is the real root's with the next free suffix. "
            + (f"It is trusted through a copy of this host's `/etc/ssl` with the CA added to its bundle "
               f"(`certs/ca-certificates.crt`, {store.bundle_certs} certificates) and to its hashed folder "
               f"(`certs/`, {store.folder_entries} entries), as `update-ca-certificates` adds one. *System store* "
               f"rows run in a mount namespace (`{wrap}`) where that copy is bind-mounted over `/etc/ssl` and a copy "
               f"of `/etc/hosts` that leads `{AWS_HOST}` to 127.0.0.1 over `/etc/hosts`, with no `SSL_CERT_*` set."
               if store else ""),
            "",
            f"- *https to {AWS_HOST}, system store*: what a typical host does (the SDK's endpoint for the region). "
            "For AWS's own endpoint names kmsenv first trusts only the store's certificates whose subject is an "
            "Amazon Trust Services root's; the stand-in is one, so this row takes that first stage — the store's "
            "Amazon roots — as a real host does with the real root (checked: one `kmsenv -v` run names that stage "
            "and no other). The *typical host* target uses this row.",
            "- *https, system store*: `https://127.0.0.1:PORT`, a custom endpoint (not an AWS name), so kmsenv "
            "skips the Amazon stage and trusts the store's whole bundle (and its folder too only if that fails, "
            "which it does not here). Reported next to the targets, with no target of its own.",
            "- *https, SSL_CERT_FILE* (and *+ SSL_CERT_DIR*): `https://127.0.0.1:PORT` with those variables "
            "pointing at the copy's bundle (and folder), which kmsenv then trusts alone.",
            "",
            "Every KMS call of each row's check run came over TLS (the proxy counts them). "
            "*over http* = this median − the `http://` envelope row at the same N (table above).",
            "",
            "| command | N | median ms | min ms | CPU ms | over http ms | peak RSS MiB | KMS calls/run | runs |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for row in rows:
            if row.error:
                lines.append(f"| {row.label} | {row.n} | failed: {row.error[:120]} | | | | | | |")
                continue
            http = self.find("base", "kmsenv", "envelope", row.n)
            over = f"{row.median_ms - http.median_ms:+.2f}" if http else "–"
            lines.append(f"| {row.label} | {row.n} | {row.median_ms:.2f} | {row.min_ms:.2f} | {row.cpu_ms:.1f} | {over} | "
                         f"{row.rss_max_mib:.2f} | {row.kms_calls} | {row.warmup}+{row.runs} |")
        if self.b.https_pairs:
            lines += [
                "",
                "The typical-host target is measured side by side as well, because rows timed minutes apart move by "
                "more than its 2 ms on this machine: rounds of one hyperfine call timing "
                f"`kmsenv --endpoint-url http://127.0.0.1:PORT` and `--endpoint-url https://{AWS_HOST}:PORT` (same "
                "file, same mount namespace, `--warmup 2`, which goes first alternating). Per round, https − http of "
                "the medians, and of the mean user+system CPU (kmsenv's own cost of TLS: the server's handshake runs "
                "in the proxy, which hyperfine does not measure); the table gives the median over the rounds.",
                "",
                "| N | rounds × runs | https − http, median | rounds, min … max | CPU https − http, median |",
                "|---:|---|---:|---|---:|",
            ]
            for n, pair in sorted(self.b.https_pairs.items()):
                wall = pair["wall"]
                lines.append(f"| {n} | {wall.count} × {pair['runs']} | {wall.median:+.2f} ms | "
                             f"{wall.low:+.2f} … {wall.high:+.2f} ms | {pair['cpu'].median:+.2f} ms |")
        return lines

    def growth_table(self) -> list[str]:
        pairs = self.b.growth_pairs
        if not pairs:
            return []
        lines = [
            "",
            "The growth targets are measured side by side as well, because rows timed apart move by more than "
            "those targets allow on this machine: rounds of one hyperfine call timing the N=1 and the N=1000 "
            "file of a kind (`--warmup 2`, which goes first alternating), the ratio of the two medians per round, "
            "and the median over the rounds.",
            "",
            "| file | rounds × runs | N=1 median | N=1000 median | N=1000 / N=1, median | rounds, min … max |",
            "|---|---|---:|---:|---:|---|",
        ]
        for kind, pair in sorted(pairs.items()):
            ratio = pair["ratio"]
            lines.append(f"| {kind} | {ratio.count} × {pair['runs']} | {pair['small_ms']:.2f} ms | "
                         f"{pair['large_ms']:.2f} ms | {ratio.median:.2f}× | {ratio.low:.2f} … {ratio.high:.2f}× |")
        return lines

    def alloc_table(self) -> list[str]:
        b = self.b
        rows = [r for r in b.rows if r.group == "alloc"]
        if not rows:
            return []
        ns = sorted({r.n for r in rows})
        lines = [
            "",
            "## Allocators",
            "",
            "The same commit built with each global allocator (`KMSENV_ALLOC_BINS`; `make bench` builds them as "
            "`make static` builds the release binary, with `--features` for the allocator), measured one after "
            "the other at each N. Cells: median ms / user+system CPU ms; size: the stripped x86_64 binary.",
            "",
            "| allocator | bytes | " + " | ".join(f"{k} N={n}" for k in ("plain", "envelope") for n in ns)
            + " | plain growth | envelope growth |",
            "|---|---:|" + "---:|" * (2 * len(ns) + 2),
        ]
        for name, binary in b.alloc_bins:
            cells, medians = [], {}
            for kind in ("plain", "envelope"):
                for n in ns:
                    row = next((r for r in rows if (r.variant, r.kind, r.n) == (name, kind, n)), None)
                    if row is None or row.error:
                        cells.append("failed" if row else "–")
                        continue
                    medians[kind, n] = row.median_ms
                    cells.append(f"{row.median_ms:.2f} / {row.cpu_ms:.2f}")
            growth = []
            for kind in ("plain", "envelope"):
                lo, hi = medians.get((kind, ns[0])), medians.get((kind, ns[-1]))
                growth.append(f"{hi / lo:.2f}×" if lo and hi else "–")
            lines.append(f"| {name} | {binary.stat().st_size} | " + " | ".join(cells) + " | " + " | ".join(growth) + " |")
        return lines

    def scale_table(self) -> list[str]:
        rows = [r for r in self.b.rows if r.group == "scale"]
        if not rows:
            return []
        listing = next((r for r in rows if r.label == "kmsenv list" and not r.error), None)
        lines = [
            "",
            f"## {self.b.plan.scale_n:,} plain entries: export next to list".replace(",", " "),
            "",
            "One plain-only file (no KMS, no MAC). `list` reads, parses and prints every name; `export` also "
            "merges and quotes every value. Export must stay linear: its time is a small multiple of list's "
            f"(hyperfine `-N`, `--warmup {self.b.plan.scale_warmup}`, {self.b.plan.scale_runs} runs; `--output null`).",
            "",
            "| command | N | median ms | min ms | CPU ms | × list | peak RSS MiB | output |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for row in rows:
            if row.error:
                lines.append(f"| {row.label} | {row.n} | failed: {row.error[:120]} | | | | | |")
                continue
            ratio = f"{row.median_ms / listing.median_ms:.2f}×" if listing and listing.median_ms else "–"
            lines.append(f"| {row.label} | {row.n} | {row.median_ms:.2f} | {row.min_ms:.2f} | {row.cpu_ms:.1f} | "
                         f"{ratio} | {row.rss_max_mib:.2f} | {row.verified} |")
        return lines

    def floor_table(self) -> list[str]:
        floors = self.b.floors
        if not floors:
            return []
        p = self.b.plan
        base, lat = floors.get("base", {}), floors.get("latency", {})
        lines = [
            "",
            "## The local KMS alone (no kmsenv)",
            "",
            "Decrypt calls made by the bench process itself (Python `http.client`, a fresh connection per call, "
            f"as a starting process has; medians of {p.floor_samples} calls, of 5 bursts): the part of every "
            "time below that is moto + the proxy, not the tool measured. Real KMS answers in a few ms "
            "in-region; moto is a Python server sharing these 2 cores with everything else.",
            "",
            f"| | no added latency | {p.latency_ms:g} ms added |",
            "|---|---:|---:|",
            f"| one Decrypt, straight to moto | {fmt(base.get('moto_single_ms'), 2)} ms | |",
            f"| one Decrypt, through the proxy | {fmt(base.get('proxy_single_ms'), 2)} ms | {fmt(lat.get('proxy_single_ms'), 2)} ms |",
            *([f"| one Decrypt, through the proxy over HTTPS (a fresh TLS handshake per call) "
               f"| {fmt(base['proxy_tls_single_ms'], 2)} ms | |"] if "proxy_tls_single_ms" in base else []),
            f"| 50 concurrent Decrypts, through the proxy (wall) | {fmt(base.get('proxy_50_ms'), 1)} ms | {fmt(lat.get('proxy_50_ms'), 1)} ms |",
            f"| sustained Decrypt rate, 50 concurrent clients, 3 s | {fmt(base.get('capacity_rps'), 0)} /s | |",
        ]
        return lines

    def target(self, ok: bool | None, text: str) -> None:
        self.targets.append((ok, text))

    def check_targets(self) -> None:
        b = self.b
        env100 = self.find("base", "kmsenv", "envelope", 100)
        if env100:
            floor = b.floors.get("base", {}).get("proxy_single_ms")
            self.target(env100.median_ms <= 10, f"envelope file, N=100, no added latency: median {env100.median_ms:.2f} ms (target ≤ 10 ms)"
                        + (f"; one Decrypt alone on this local KMS: {floor:.2f} ms" if floor else ""))
            boto = self.find("base", "boto3", "direct", 100)
            if boto:
                r = boto.median_ms / env100.median_ms
                self.target(r >= 25, f"envelope N=100 vs boto3 entrypoint N=100: {boto.median_ms:.1f} ms / {env100.median_ms:.2f} ms = {r:.1f}× faster (target ≥ 25×)")
            else:
                self.target(None, "envelope N=100 vs boto3 entrypoint N=100: boto3 not measured")
        else:
            self.target(None, "envelope file, N=100: not measured")
        for kind, label, limit in (("envelope", "envelope", 1.5), ("plain", "plain-only", 2)):
            small, large = self.find("base", "kmsenv", kind, 1), self.find("base", "kmsenv", kind, 1000)
            rows = (f"{large.median_ms:.2f} / {small.median_ms:.2f} ms = {large.median_ms / small.median_ms:.2f}×"
                    if small and large else None)
            pair = b.growth_pairs.get(kind)
            if pair:
                ratio = pair["ratio"]
                self.target(ratio.median <= limit,
                            f"growth: {label} N=1000 / N=1, side by side = {ratio.median:.2f}×, the median of "
                            f"{ratio.count} rounds of {pair['runs']} runs each (rounds {ratio.low:.2f} … "
                            f"{ratio.high:.2f}×; medians {pair['large_ms']:.2f} / {pair['small_ms']:.2f} ms; "
                            f"target ≤ {limit}×)" + (f"; the rows above, timed apart: {rows}" if rows else ""))
            elif rows:
                self.target(large.median_ms / small.median_ms <= limit,
                            f"growth: {label} N=1000 / N=1 = {rows} (target ≤ {limit}×)")
            elif "base" in b.sections:
                self.target(None, f"growth {label} N=1000 vs N=1: not measured")
        true_row = self.find("base", "true", "-", None)
        for n in (1, 100):
            row = self.find("base", "kmsenv", "envelope", n)
            if row:
                # The run ends by becoming `true`, whose own start hyperfine counts too.
                floor = (f"; `true` alone, which the run execs at its end, takes {true_row.cpu_ms:.2f} ms "
                         f"(its row), so kmsenv's own share is {row.cpu_ms - true_row.cpu_ms:.2f} ms"
                         if true_row and true_row.cpu_ms is not None else "")
                self.target(row.cpu_ms <= 2, f"CPU of an envelope run, N={n}: {row.cpu_ms:.2f} ms user+system "
                            "(hyperfine's mean; target ≤ 2 ms)" + floor)
        for n in b.plan.https_ns:
            # A typical host talks to AWS_HOST: the row whose kmsenv took the Amazon stage.
            https = next((r for r in b.rows if r.group == "https" and r.n == n and r.aws_stage and not r.error), None)
            custom = next((r for r in b.rows if r.group == "https" and r.n == n and r.wrap and not r.aws_stage
                           and not r.error), None)
            http = self.find("base", "kmsenv", "envelope", n)
            floor = b.floors.get("base", {})
            server = (floor["proxy_tls_single_ms"] - floor["proxy_single_ms"]
                      if "proxy_tls_single_ms" in floor and "proxy_single_ms" in floor else None)
            client = (f"; the bench's own Python client pays {server:+.2f} ms for HTTPS to the same proxy "
                      "(its handshake, both ends, a fresh connection per call)" if server is not None else "")
            pair = b.https_pairs.get(n)
            if pair:
                wall = pair["wall"]
                rows = (f"; the rows above, timed minutes apart, give {https.median_ms - http.median_ms:+.2f} ms"
                        if https and http else "")
                self.target(wall.median <= 2, f"envelope N={n} over HTTPS on a typical host (https://{AWS_HOST}, "
                            f"system store, no SSL_CERT_*), side by side: https − http = {wall.median:+.2f} ms, the "
                            f"median of {wall.count} rounds of {pair['runs']} runs each (rounds {wall.low:+.2f} … "
                            f"{wall.high:+.2f} ms; target ≤ +2 ms); kmsenv's own CPU for TLS "
                            f"{pair['cpu'].median:+.2f} ms (user+system, the median of the rounds' differences)"
                            + client + rows)
            elif https and http:
                d = https.median_ms - http.median_ms
                self.target(d <= 2, f"envelope N={n} over HTTPS on a typical host (https://{AWS_HOST}, system store, "
                            f"no SSL_CERT_*): {https.median_ms:.2f} ms − http {http.median_ms:.2f} ms = {d:+.2f} ms "
                            "(target ≤ +2 ms)" + client)
            elif "https" in b.sections:
                self.target(None, f"envelope N={n} over HTTPS to {AWS_HOST}, system store: not measured"
                            + ("" if http else " (or no http row to compare with)"))
            if custom and http:
                d = custom.median_ms - http.median_ms
                self.reported.append(f"envelope N={n} over HTTPS to a custom endpoint (https://127.0.0.1, system store, "
                                     f"no SSL_CERT_*: the store's whole bundle): {custom.median_ms:.2f} ms − http "
                                     f"{http.median_ms:.2f} ms = {d:+.2f} ms")
        self.peer_targets()
        floor = self.find("base", "true", "-", None)
        for n in b.plan.ns:
            plain = self.find("base", "kmsenv", "plain", n)
            if plain and floor:
                d = plain.median_ms - floor.median_ms
                self.target(d <= 1.0, f"plain-only file N={n}: {plain.median_ms:.2f} ms − true {floor.median_ms:.2f} ms = {d:+.2f} ms (target ≤ 1 ms over `true`)")
        lat = b.plan.latency_ms
        for n in (1, 100):
            row = self.find("latency", "kmsenv", "envelope", n)
            if row:
                floor = b.floors.get("latency", {}).get("proxy_single_ms")
                self.target(row.median_ms <= 45, f"{lat:g} ms added latency, envelope N={n}: median {row.median_ms:.2f} ms (target ≤ 45 ms)"
                            + (f"; one Decrypt alone: {floor:.2f} ms" if floor else ""))
        row = self.find("latency", "kmsenv", "direct", 50)
        if row:
            floor = b.floors.get("latency", {}).get("proxy_50_ms")
            self.target(row.median_ms <= 65, f"{lat:g} ms added latency, 50 direct values: median {row.median_ms:.2f} ms (target ≤ 65 ms)"
                        + (f"; 50 concurrent Decrypts alone on this local KMS: {floor:.1f} ms" if floor else ""))
        else:
            self.target(None, "added latency, 50 direct values: not measured")
        for row in b.rows:
            if row.tool != "kmsenv" or row.error or row.group == "scale":
                continue
            if row.kind == "envelope":
                runs = row.warmup + row.runs
                ok = row.kms_calls == 1 and row.kms_decrypts == 1 and row.kms_during_timing == runs
                self.target(ok, f"KMS calls, {row.group} {row.label.removeprefix('kmsenv ')}: {row.kms_calls} per run "
                            f"({row.kms_decrypts} Decrypt); {row.kms_during_timing} during {runs} timed runs (target exactly 1 per file)")
            elif row.kind == "direct":
                runs = row.warmup + row.runs
                ok = row.kms_calls == row.n and row.kms_decrypts == row.n and row.kms_during_timing == runs * row.n
                self.target(ok, f"KMS calls, {row.group} direct N={row.n}: {row.kms_calls} per run "
                            f"({row.kms_decrypts} Decrypt); {row.kms_during_timing} during {runs} timed runs (target exactly 1 per value)")
            elif row.kind == "plain":
                self.target(row.kms_calls == 0, f"KMS calls, plain-only N={row.n}: {row.kms_calls} (expected 0)")
        rows = {r.label: r for r in b.rows if r.group == "scale" and not r.error}
        listing, export = rows.get("kmsenv list"), rows.get("kmsenv export --format dotenv")
        if listing and export:
            r = export.median_ms / listing.median_ms
            self.target(r <= 4, f"export of {b.plan.scale_n} plain entries: {export.median_ms:.0f} ms, "
                        f"{r:.2f}× list's {listing.median_ms:.0f} ms (target ≤ 4×: linear)")
        for row in b.rows:
            if row.tool == "kmsenv" and row.n == 1000 and not row.error and row.group != "scale":
                self.target(row.rss_max_mib <= 12, f"peak RSS, {row.group} {row.kind} N=1000: {row.rss_max_mib:.2f} MiB (target ≤ 12 MiB)")

    def peer_targets(self) -> None:
        """Every peer slower than kmsenv (its envelope file, same N, same latency) at every N measured."""
        for tool in ("boto3", "awscli", "dotenvx", "fnox"):
            pairs, unmatched = [], []
            for row in self.b.rows:
                if row.tool != tool or row.group not in ("base", "latency"):
                    continue
                ref = self.find(row.group, "kmsenv", "envelope", row.n)
                if row.error or ref is None:
                    unmatched.append(f"{row.group} N={row.n}" + (" failed" if row.error else ""))
                    continue
                pairs.append((row.median_ms / ref.median_ms, row))
            if not pairs:
                if unmatched:
                    self.target(None, f"{tool} slower than kmsenv at every N: nothing to compare ({', '.join(unmatched)})")
                continue
            worst, row = min(pairs, key=lambda x: x[0])
            text = (f"{tool} slower than kmsenv (envelope file) at every N measured: {len(pairs)} rows, the closest "
                    f"{row.group} N={row.n} at {worst:.2f}× kmsenv's median (target > 1× everywhere)")
            if unmatched:
                text += f"; not compared: {', '.join(unmatched)}"
            self.target(worst > 1, text)

    def render(self) -> str:
        b = self.b
        p = b.plan
        info = self.info
        binary = info["binary"]
        m = info["machine"]
        self.check_targets()
        out = [
            "# kmsenv benchmark results",
            "",
            f"Generated by `make bench` (`{shlex.join(['python3', 'bench/run.py', *info['argv']])}`) on "
            f"{self.started.strftime('%Y-%m-%d %H:%M %Z').strip()}; the whole run took {self.elapsed_s / 60:.1f} min.",
            "",
            "## Machine and build",
            "",
            f"- machine: {m['nproc']} CPUs (`nproc`), {m['cpu']}, {m['memory']} RAM, kernel {m['kernel']}",
            f"- load average (1/5/15 min) at start {info['load_start']}, at end {info['load_end']} "
            "(other work on the machine shows up as noise)",
            f"- kmsenv: `{info['version']}`, commit {info['commit']}",
            f"- binary: `{binary['path'].relative_to(ROOT) if binary['path'].is_relative_to(ROOT) else binary['path']}`, "
            f"{binary['size']} bytes = {binary['mib']:.2f} MiB; `file`: {binary['file']}",
            f"- tools: {info['tools']}",
            "",
            "## How it was measured",
            "",
            "- KMS is moto_server on a loopback port; every measured command talks to it through the project's "
            "fault proxy (`tests/support/kms_fault_proxy.py`), which counts calls and adds latency or a quota "
            "when told to. Same key, same names and values (32-character random strings) for every tool at a given N.",
            "- The proxy runs with `TCP_NODELAY` on its connections: it writes an answer's headers and body "
            "separately, and with Nagle's algorithm on, a client that reuses its connection (boto3, the AWS CLI) "
            "would wait for a delayed ACK (~40 ms) on every request after its first. Real KMS adds no such delay.",
            "- Files were made with kmsenv itself: plain-only files with `kmsenv import --plain` (no keys, so no "
            "KMS and no MAC), envelope files with `kmsenv init --key … --context app=bench` + `kmsenv import` "
            "(sealed values).",
            f"- Direct `kms` values: for N={b.generation.get('probe_n')} both ways were timed: `kmsenv set --kms` "
            f"once per value {b.generation.get('set_s', 0):.2f} s, KMS `Encrypt` (context `kmsenv:var`=NAME) "
            f"+ writing the `{{ kms = …, key = …, context = … }}` entries {b.generation.get('encrypt_s', 0):.2f} s; "
            f"the faster (`{b.generation.get('used')}`) made every direct file. kmsenv direct files are measured "
            f"only up to N={max(p.direct_ns)} (N={', '.join(map(str, p.direct_ns))}), as the issue allows; the "
            "boto3 peer reads the same kind of file at every N (its N=1000 file is made the same way).",
            f"- Wall time: hyperfine `-N` (no shell), `--warmup {p.warmup}`, {p.runs_fast} runs for kmsenv and "
            f"`true` ({p.runs_fast_slow} when one run takes over {FAST_SLOW_RUN_S:g} s), {p.runs_peer} for peers; "
            f"a peer whose single run took over {SLOW_RUN_S:g} s gets `--warmup {p.warmup_slow}` and "
            f"{p.runs_slow} runs, over {VERY_SLOW_RUN_S:g} s {p.runs_very_slow} runs, over {GLACIAL_RUN_S:g} s "
            f"`--warmup {p.warmup_glacial}` and {p.runs_glacial} runs, to keep the bench under 15 minutes "
            "(the `runs` column says warmup+runs). The table shows the "
            "**median**; CPU ms is hyperfine's mean user + system time per run (less sensitive to other load "
            "on the machine than wall time). Raw JSON is in `bench/results/`.",
            "- Peak RSS: GNU `/usr/bin/time -f %M` of the check run below plus "
            f"{p.rss_runs_fast} runs of the command for kmsenv, {p.rss_runs_peer} for peers ({p.rss_runs_slow} "
            f"if slow, {p.rss_runs_very_slow} if very slow); **the maximum** is shown. The kernel keeps the high-water mark across `execve`, so for kmsenv it "
            "is kmsenv's own peak before it became `true`; for the awscli loop it is the largest process of the "
            "tree (one `aws`).",
            "- KMS calls/run: proxy counts reset before and read after one run of the command with `env` in "
            "place of `true`; that run's output is also checked to hold all N values. Counts are also read "
            "across all the timed runs, and must equal runs × calls per run (see the targets).",
            "- Ratios: this row's median / the median of kmsenv with the envelope (or direct) file at the same N "
            "and the same latency. Above 1× means slower than kmsenv.",
            f"- Peers: `bench/peers/boto3_entrypoint.py` (Python {platform.python_version()}, one boto3 client, "
            "one Decrypt per variable, then `os.execvpe`); `bench/peers/awscli_loop.sh` (`aws kms decrypt` per "
            f"variable, then `exec`; N ≤ {max(p.awscli_ns)}); `dotenvx run -f .env -- true` with its own local "
            "keys (`dotenvx encrypt` of the same values; no KMS"
            + (", which itself took " + ", ".join(f"{t:.1f} s for N={n}" for n, t in
                                                   b.generation.get("dotenvx_encrypt_s", {}).items())
               if b.generation.get("dotenvx_encrypt_s") else "")
            + ").",
        ]
        for note in b.notes:
            out.append(f"- {note}")
        out += self.floor_table()
        if any(r.group == "base" for r in b.rows):
            out += ["", "## No added latency", ""] + self.table("base") + self.growth_table()
        if any(r.group == "latency" for r in b.rows):
            out += ["", f"## {p.latency_ms:g} ms added to every KMS request by the proxy", ""] + self.table("latency")
        out += self.https_table()
        out += self.alloc_table()
        out += self.scale_table()
        out += self.storm_section() if b.storms else []
        out += ["", "## Targets (checked by the bench, not by tests)", ""]
        for ok, text in self.targets:
            mark = "PASS" if ok else ("MISS" if ok is False else "N/A ")
            out.append(f"- **{mark}** {text}")
        for text in self.reported:
            out.append(f"- *reported, no target:* {text}")
        return "\n".join(out) + "\n"

    def storm_section(self) -> list[str]:
        b = self.b
        p = b.plan
        out = [
            "",
            "## Fleet start storm",
            "",
            f"{p.storm_procs} × `kmsenv --timeout {p.storm_timeout_s} exec -- true`, at most "
            f"{p.storm_concurrency} running at once (a new one starts as soon as one exits: this is a 2-core "
            f"machine), while the proxy enforces a KMS-like request quota of {p.storm_quota_rps:g} requests/s "
            f"(token bucket, burst {p.storm_quota_burst:g}) and answers `ThrottlingException` beyond it — "
            "a scaled-down model of a KMS account quota, set below the sustained rate that moto + the proxy "
            "can serve here (table above) so that, as with real KMS, the quota and not the server is the limit. "
            "kmsenv retries throttling until its `--timeout` (the SDK's standard mode: exponential backoff with full "
            "jitter, capped at 5 s; other failures get 4 attempts). Time to exec = from spawn to exit of "
            "`kmsenv exec -- true` (includes kmsenv's retries with backoff; `true` itself takes ~1 ms), "
            "percentiles over the processes that exec'd.",
            "",
            "| file | exec'd (exit 0) | failed | p50 ms | p99 ms | max ms | KMS calls | throttled | storm wall s | KMS req/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in b.storms:
            failed = str(s["failed"])
            if s["failed"]:
                codes = ", ".join(f"exit {rc}: {c}" for rc, c in sorted(s["failed_codes"].items()))
                failed += f" ({codes}; {s['failed_throttling']} name ThrottlingException)"
            out.append(
                f"| {s['kind']}, {s['values']} values | {s['started']}/{s['procs']} | {failed} | {fmt(s['p50_ms'])} | "
                f"{fmt(s['p99_ms'])} | {fmt(s['max_ms'])} | {s['kms_total']} ({s['kms_decrypt']} Decrypt) | "
                f"{s['throttled']} | {s['wall_s']:.1f} | {s['kms_total'] / s['wall_s']:.0f} |"
            )
        for s in b.storms:
            if s["sample_error"]:
                out.append(f"\nA failure ({s['kind']}): `{s['sample_error'][:300]}`")
        return out


# ---------------------------------------------------------------------------


class OnlyScale(Exception):
    """`--only-scale`: the scale rows are measured; go straight to the report."""


def sections_arg(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown section(s) {', '.join(unknown) or '(none)'}; "
                                         f"choose from {', '.join(SECTIONS)}")
    return names


def alloc_bins(text: str) -> list[tuple[str, Path]]:
    """KMSENV_ALLOC_BINS="NAME=BINARY,NAME=BINARY" (what `make bench` builds)."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, path = item.partition("=")
        binary = Path(path) if Path(path).is_absolute() else ROOT / path
        if not sep or not os.access(binary, os.X_OK):
            raise SystemExit(f"bench: KMSENV_ALLOC_BINS: {item!r} is not NAME=EXECUTABLE")
        out.append((name, binary))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few runs, small N (for developing the bench)")
    parser.add_argument("--out", type=Path, help="report path (default bench/RESULTS.md; --quick: bench/results/RESULTS-quick.md)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    parser.add_argument("--only-scale", action="store_true",
                        help="only the export-vs-list rows (no KMS needed); report: bench/results/RESULTS-scale.md")
    parser.add_argument("--only", type=sections_arg, metavar="SECTION[,SECTION]",
                        help=f"measure only these parts ({', '.join(SECTIONS)}); report: bench/results/RESULTS-only.md")
    storm = parser.add_argument_group("fleet storm (default: the plan's; a full storm takes minutes on 2 cores)")
    storm.add_argument("--storm-procs", type=int, help="processes started in all (full plan: 500)")
    storm.add_argument("--storm-concurrency", type=int, help="at most this many at once (full plan: 50)")
    storm.add_argument("--storm-values", type=int, help="direct kms values per file (full plan: 20)")
    storm.add_argument("--storm-quota", type=float, help="the proxy's quota in requests/s, also its burst (100)")
    storm.add_argument("--storm-timeout", type=int, help="each process's --timeout in seconds (30)")
    args = parser.parse_args()

    plan = QUICK if args.quick else FULL
    storm_sizes = {"storm_procs": args.storm_procs, "storm_concurrency": args.storm_concurrency,
                   "storm_direct_values": args.storm_values, "storm_quota_rps": args.storm_quota,
                   "storm_quota_burst": args.storm_quota, "storm_timeout_s": args.storm_timeout}
    plan = dataclasses.replace(plan, **{k: v for k, v in storm_sizes.items() if v is not None})
    out_dir = BENCH / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.json"):
        old.unlink()
    default_report = BENCH / "RESULTS.md"
    if args.quick:
        default_report = out_dir / "RESULTS-quick.md"
    if args.only_scale:
        default_report = out_dir / "RESULTS-scale.md"
    elif args.only:
        default_report = out_dir / "RESULTS-only.md"
    report_path = args.out or default_report
    kmsenv = Path(os.environ.get("KMSENV_BIN") or STATIC_BIN)
    if not kmsenv.is_absolute():
        kmsenv = ROOT / kmsenv
    if not os.access(kmsenv, os.X_OK):
        print(f"bench: {kmsenv} not found: run `make static` (or set KMSENV_BIN)", file=sys.stderr)
        return 2
    dotenvx = os.environ.get("DOTENVX") or (str(DEFAULT_DOTENVX) if os.access(DEFAULT_DOTENVX, os.X_OK) else shutil.which("dotenvx"))
    if dotenvx and "/" in dotenvx and not os.path.isabs(dotenvx):
        dotenvx = str(ROOT / dotenvx)  # it also runs with other working folders

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    started_at = datetime.datetime.now().astimezone()
    t0 = time.monotonic()
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    work = Path(tempfile.mkdtemp(prefix="kmsenv-bench-"))
    try:
        bench = Bench(plan, work, out_dir, kmsenv, dotenvx)
        bench.sections = set(args.only or SECTIONS)
        bench.fnox = find_fnox()
        bench.alloc_bins = alloc_bins(os.environ.get("KMSENV_ALLOC_BINS", ""))
        if not dotenvx:
            bench.notes.append("dotenvx: not found (make bench installs it into bench/.node), so not measured.")
        log(f"measuring {kmsenv} ({'quick' if args.quick else 'full'} plan); work folder {work}")
        if args.only_scale:
            bench.env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KMSENV_"))}
            bench.measure_scale()
            raise OnlyScale
        bench.start()
        bench.make_files()
        steps = {"base": bench.measure_base, "latency": bench.measure_latency, "https": bench.measure_https,
                 "alloc": bench.measure_allocators, "storm": bench.measure_storms, "scale": bench.measure_scale}
        for name in SECTIONS:
            if name in bench.sections:
                section = time.monotonic()
                steps[name]()
                log(f"{name} section took {time.monotonic() - section:.0f} s")
    except OnlyScale:
        pass
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_services()
        if args.keep:
            print(f"bench: work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    tools = []
    tools.append(output_of(["hyperfine", "--version"]))
    gnu_time = output_of(["dpkg-query", "-W", "-f", "${Version}", "time"]) if shutil.which("dpkg-query") else ""
    tools.append(f"GNU time {gnu_time}".strip())
    tools.append(output_of([sys.executable, "-c", "import boto3; print('boto3', boto3.__version__)"]))
    tools.append(output_of([os.environ.get("AWS_CLI") or resolve_shim("aws") or "aws", "--version"]).split(" Linux")[0])
    tools.append("node " + output_of(["node", "--version"]))
    if dotenvx:
        tools.append("dotenvx " + output_of([dotenvx, "--version"]))
    tools.append(output_of(["python3", "-c", "import moto; print('moto', moto.__version__)"]))
    info = {
        "quick": args.quick,
        "argv": sys.argv[1:],
        "machine": machine_info(),
        "load_start": load_start,
        "load_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "version": output_of([str(kmsenv), "--version"]),
        "commit": git_info(),
        "binary": binary_info(kmsenv),
        "tools": ", ".join(tools),
    }
    text = Report(bench, started_at, time.monotonic() - t0, info).render()
    report_path.write_text(text + kept_sizes(report_path))
    print()
    print(text)
    log(f"wrote {report_path.relative_to(ROOT) if report_path.is_relative_to(ROOT) else report_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
