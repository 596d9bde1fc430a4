#!/usr/bin/env python3
"""A fault-injecting reverse proxy for the AWS JSON APIs kmsenv calls (DESIGN §6):
KMS, Secrets Manager and SSM Parameter Store, also carrying the STS and S3
requests of a run.

It sits on loopback between kmsenv and moto_server and adds what moto does not
model: error answers (ThrottlingException, DisabledException, AccessDenied…,
for any operation), 5xx answers, latency, a request quota, connections that hang
or are reset, answers rewritten as a partial or hostile service would write them,
and a count of requests per operation, per service and per region.

    python3 tests/support/kms_fault_proxy.py --upstream http://127.0.0.1:MOTO_PORT \
        [--listen 127.0.0.1:0] [--latency-ms N] [--quota-rps R --quota-burst B] \
        [--tls-cert server.pem --tls-key server.key]

It prints exactly one line, `listening on 127.0.0.1:PORT`, once it accepts
connections, then serves until killed, or until its parent process exits.

Control API on the same port (never forwarded):

    GET  /_proxy/counts   {"total": n, "ops": {"Decrypt": n}, "services": {"TrentService": n},
                           "regions": {"us-east-1": n}, "throttled": n,
                           "akids": {"AKID": n}, "tokens": {"TOKEN": n}, "tls": n,
                           "peak_in_flight": {"Decrypt": n}, "waits": {"seen": n, "timeout": n}}
    GET  /_proxy/requests [{"op": "Decrypt", "region": "us-east-1", "akid": "AKID", "token": "TOKEN",
                            "tls": "yes"|"no", "status": "200", "issued_akid": "…", "issued_token": "…",
                            "form.Action": "…", …}, …]   every request, in order; all values strings
    POST /_proxy/reset    zero the counts, clear the rules
    POST /_proxy/rules    {"rules": [{"op": "Decrypt"|null, "service": "secretsmanager"|null,
                                      "region": "us-east-1"|null,
                                      "context_lacks": "kmsenv:var"|null,
                                      "times": K|null, "action": "error", "code": "…", "status": 400}, …]}
    POST /_proxy/config   {"latency_ms": N, "quota_rps": R, "quota_burst": B}

Actions: "error" (code, status=400), "status" (status: 500/503/…), "hang",
"reset" (RST, no answer), "latency" (ms, then forward), "wait_for" (hold the
request until one of operation "seen" has arrived, at most "ms", then forward;
`waits` counts how each ended: a client that makes the two calls one after the
other only ever times out), "answer" (any reply:
status, headers {name: value}, body text — e.g. an S3 XML error or redirect),
"flood" (a 200 answer of `bytes` bytes, the start of a JSON object that never
ends, written as it goes; with Content-Length, or with "chunked": true in
chunks). Any other action may
also carry "ms": a delay before the fault is delivered. The first rule that
matches the request's operation, service and region and has `times` left wins;
a rule with `times` null applies forever. Requests are counted when received,
before any fault; `peak_in_flight` is, per operation, the most requests held at
once from arrival to the end of their answer. Standard library only (Python 3.11).

Operations and services: the operation is the `X-Amz-Target` suffix and the
service its prefix: "TrentService" (KMS: Decrypt, …), "secretsmanager"
(BatchGetSecretValue, GetSecretValue, …) and "AmazonSSM" (GetParameters, …).
Operation names differ between these services, so "op" alone picks one.

Rewritten answers (Secrets Manager and SSM): these actions forward the request,
then edit a 200 JSON answer's items — the `SecretValues` of BatchGetSecretValue,
the `Parameters` of GetParameters, the answer itself for GetSecretValue. "item"
(a substring of an item's `Name` or `ARN`; null: the first item) picks one:

    "drop_item"    the item is removed and reported nowhere (a silently partial answer)
    "item_error"   the item is removed and reported as failed: an `Errors` entry
                   {SecretId: its ARN, ErrorCode: "code", Message} (Secrets Manager),
                   or its name in `InvalidParameters` (SSM)
    "reorder"      the items in reverse order (matching by position would mix them up)
    "swap_names"   two items ("items": [a, b], else the first two) exchange their
                   `Name` fields and keep their `ARN`s and values
    "foreign_arn"  every ARN of the item (`ARN`, and `Name` when it is an ARN) is
                   rewritten to "arn_account" and/or "arn_region" (not "region":
                   that field says which requests a rule matches)

SSM as AWS answers (always on): moto reports a parameter ARN in `Names` as
invalid and omits the `Selector` field that real SSM sends. The proxy asks moto
for each requested name in turn, an ARN translated to the parameter's name
(`arn:…:parameter/prod/db` → `/prod/db`; a one-level name is tried without, then
with, the leading slash), and assembles one answer in request order: `Name` as
requested (the ARN when asked by ARN; a `:VERSION`/`:LABEL` selector stripped),
`Selector` (":3", ":prod") when one was asked, and each name moto did not find,
exactly as requested, in `InvalidParameters`. More than 10 names go to moto
unchanged (its ValidationException). It counts as one request.

A lax KMS: the action "drop_key_id" forwards the request without its `KeyId`,
so moto decrypts with whatever key the ciphertext names and answers for that
key, as a hostile endpoint could; the client must compare the answer's KeyId
with the key it asked for.

Key policy conditions: a rule with "context_lacks": KEY matches only a KMS
request whose encryption context (`EncryptionContext`; for ReEncrypt,
`DestinationEncryptionContext`) has no KEY. Moto enforces no key policy; with
{"op": "Encrypt", "context_lacks": "kmsenv:var", "action": "error", "code":
"AccessDeniedException"} the proxy denies what a key policy's
`"Null": {"kms:EncryptionContext:kmsenv:var": "false"}` condition would.

What a KMS request asked for: its `KeyId`, `DestinationKeyId` (ReEncrypt) and
encryption context are logged in /_proxy/requests as "kms.KeyId",
"kms.DestinationKeyId" and "kms.context" (the context as JSON with sorted
keys), when the request has them, so a test can tell which key was used.

Who signed: each request's access key id (`Credential=AKID/…` of the SigV4
`Authorization` header; "(none)" when unsigned) and its `X-Amz-Security-Token`
("(none)" when absent) are counted in "akids" and "tokens" and logged in
/_proxy/requests. The operation is the `X-Amz-Target` suffix (KMS JSON), else
the `Action` of a query-protocol request (STS: form body or query string), whose
form parameters are logged as "form.NAME", else "s3:METHOD" for a request
signed for S3 (e.g. "s3:GET" for GetObject). When an answer carries credentials
(STS `<AccessKeyId>`/`<SessionToken>`), they are logged as "issued_akid" and
"issued_token", so a test can check that later requests use exactly them.

TLS: with --tls-cert/--tls-key, a connection whose first byte is a TLS
handshake record is served over TLS with that certificate; any other is served
as plain HTTP (so the control API stays reachable with a plain client).
"tls" counts the requests that came over TLS, "tls_handshakes" the connections
that began a TLS handshake (counted before it is answered: also those the client
gave up, say on an unknown CA).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import select
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from http_relay import relay


CREDENTIAL_REGION = re.compile(r"Credential=[^/,\s]+/[^/,\s]+/([^/,\s]+)/")
CREDENTIAL_AKID = re.compile(r"Credential=([^/,\s]+)/")
CREDENTIAL_SERVICE = re.compile(r"Credential=[^/,\s]+/[^/,\s]+/[^/,\s]+/([^/,\s]+)/")
ISSUED_AKID = re.compile(rb"<AccessKeyId>([^<]*)</AccessKeyId>")
ISSUED_TOKEN = re.compile(rb"<SessionToken>([^<]*)</SessionToken>")
NONE = "(none)"

# Actions that forward the request and then edit the answer's items.
REWRITES = ("drop_item", "item_error", "reorder", "swap_names", "foreign_arn")

# Where an answer keeps its items, per operation (None: the answer is the item).
ITEM_LISTS = {"BatchGetSecretValue": "SecretValues", "GetParameters": "Parameters", "GetSecretValue": None}

SSM_PARAMETER_ARN = re.compile(r"^arn:[^:]+:ssm:[^:]*:[^:]*:parameter/(.+)$")

STATUS_ERROR_TYPES = {
    500: "InternalFailure",
    502: "BadGateway",
    503: "ServiceUnavailableException",
    504: "GatewayTimeout",
}

UPSTREAM_TIMEOUT = 60.0


class State:
    """Counts, rules and configuration, shared by every handler thread."""

    def __init__(self, latency_ms: float, quota_rps: float | None, quota_burst: float | None):
        self.lock = threading.Lock()
        # Notified on every arrival, for requests that wait for another's (wait_for).
        self.arrived = threading.Condition(self.lock)
        self.in_flight: dict[str, int] = {}
        self.peak_in_flight: dict[str, int] = {}
        self.waits = {"seen": 0, "timeout": 0}
        self.total = 0
        self.ops: dict[str, int] = {}
        self.services: dict[str, int] = {}
        self.regions: dict[str, int] = {}
        self.throttled = 0
        self.akids: dict[str, int] = {}
        self.session_tokens: dict[str, int] = {}
        self.tls = 0
        self.tls_handshakes = 0
        self.requests: list[dict] = []
        self.rules: list[dict] = []
        self.latency_ms = float(latency_ms or 0)
        self.quota_rps: float | None = None
        self.quota_burst = 0.0
        self.tokens = 0.0
        self.refilled = time.monotonic()
        self.set_quota(quota_rps, quota_burst)

    # Callers hold self.lock.
    def set_quota(self, rps, burst) -> None:
        if rps is None or float(rps) <= 0:
            self.quota_rps = None
            return
        self.quota_rps = float(rps)
        self.quota_burst = max(1.0, float(burst if burst is not None else rps))
        self.tokens = self.quota_burst
        self.refilled = time.monotonic()

    def count(self, op: str | None, service: str | None, region: str | None, entry: dict | None = None) -> None:
        with self.lock:
            self.total += 1
            key = op or "(none)"
            self.ops[key] = self.ops.get(key, 0) + 1
            self.in_flight[key] = self.in_flight.get(key, 0) + 1
            self.peak_in_flight[key] = max(self.peak_in_flight.get(key, 0), self.in_flight[key])
            self.arrived.notify_all()
            key = service or "(none)"
            self.services[key] = self.services.get(key, 0) + 1
            key = region or "(none)"
            self.regions[key] = self.regions.get(key, 0) + 1
            if entry is not None:
                self.akids[entry["akid"]] = self.akids.get(entry["akid"], 0) + 1
                token = entry["token"]
                self.session_tokens[token] = self.session_tokens.get(token, 0) + 1
                if entry["tls"] == "yes":
                    self.tls += 1
                self.requests.append(entry)

    def done(self, op: str | None) -> None:
        """A request counted by `count` has been answered (or dropped)."""
        with self.lock:
            key = op or "(none)"
            self.in_flight[key] = max(0, self.in_flight.get(key, 0) - 1)

    def wait_for(self, op: str, ms: float) -> None:
        """Until a request of `op` has arrived (now or before), at most `ms`."""
        deadline = time.monotonic() + ms / 1000.0
        with self.lock:
            while self.ops.get(op, 0) == 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.waits["timeout"] += 1
                    return
                self.arrived.wait(left)
            self.waits["seen"] += 1

    def update(self, entry: dict, **fields: str) -> None:
        """Adds to a logged request what became known later (its answer)."""
        with self.lock:
            entry.update(fields)

    def take_token(self) -> bool:
        """Token bucket: False (and counted as throttled) when over quota."""
        with self.lock:
            if self.quota_rps is None:
                return True
            now = time.monotonic()
            self.tokens = min(self.quota_burst, self.tokens + (now - self.refilled) * self.quota_rps)
            self.refilled = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            self.throttled += 1
            return False

    def match(self, op: str | None, service: str | None, region: str | None, context: dict) -> dict | None:
        with self.lock:
            for rule in self.rules:
                if rule.get("op") is not None and rule["op"] != op:
                    continue
                if rule.get("service") is not None and rule["service"] != service:
                    continue
                if rule.get("region") is not None and rule["region"] != region:
                    continue
                if rule.get("context_lacks") is not None and rule["context_lacks"] in context:
                    continue
                times = rule.get("times")
                if times is not None and rule["_used"] >= times:
                    continue
                rule["_used"] += 1
                return {k: v for k, v in rule.items() if not k.startswith("_")}
            return None

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "total": self.total,
                "ops": dict(self.ops),
                "services": dict(self.services),
                "regions": dict(self.regions),
                "throttled": self.throttled,
                "akids": dict(self.akids),
                "tokens": dict(self.session_tokens),
                "tls": self.tls,
                "tls_handshakes": self.tls_handshakes,
                "latency_ms": self.latency_ms,
                "quota_rps": self.quota_rps,
                "peak_in_flight": dict(self.peak_in_flight),
                "waits": dict(self.waits),
                "rules": [
                    {**{k: v for k, v in r.items() if not k.startswith("_")}, "used": r["_used"]}
                    for r in self.rules
                ],
            }

    def request_log(self) -> list[dict]:
        with self.lock:
            return [dict(entry) for entry in self.requests]

    def reset(self) -> None:
        with self.lock:
            self.total = 0
            self.ops = {}
            self.services = {}
            self.regions = {}
            self.throttled = 0
            self.akids = {}
            self.session_tokens = {}
            self.tls = 0
            self.tls_handshakes = 0
            self.requests = []
            self.rules = []
            self.peak_in_flight = {}
            self.waits = {"seen": 0, "timeout": 0}

    def set_rules(self, rules: list) -> None:
        checked = []
        for rule in rules:
            if not isinstance(rule, dict):
                raise ValueError(f"a rule must be an object: {rule!r}")
            action = rule.get("action")
            if action not in ("error", "status", "hang", "reset", "latency", "wait_for", "answer", "drop_key_id",
                              "flood") + REWRITES:
                raise ValueError(f"unknown action {action!r}")
            if action == "item_error" and not isinstance(rule.get("code"), str):
                raise ValueError("an item_error rule needs a string `code`")
            if rule.get("item") is not None and not isinstance(rule.get("item"), str):
                raise ValueError("`item` must be a string (part of an item's Name or ARN)")
            items = rule.get("items")
            if items is not None and (
                not isinstance(items, list) or len(items) != 2 or not all(isinstance(i, str) for i in items)
            ):
                raise ValueError("`items` must be two strings")
            if action == "foreign_arn" and not (
                isinstance(rule.get("arn_account"), str) or isinstance(rule.get("arn_region"), str)
            ):
                raise ValueError("a foreign_arn rule needs a string `arn_account` or `arn_region`")
            if action == "error" and not isinstance(rule.get("code"), str):
                raise ValueError("an error rule needs a string `code`")
            if action == "status" and not isinstance(rule.get("status"), int):
                raise ValueError("a status rule needs an integer `status`")
            if action == "answer" and not isinstance(rule.get("headers") or {}, dict):
                raise ValueError("an answer rule's `headers` must be an object")
            if action == "flood" and (not isinstance(rule.get("bytes"), int) or rule["bytes"] < 0):
                raise ValueError("a flood rule needs a non-negative integer `bytes`")
            if action == "latency" and not isinstance(rule.get("ms"), (int, float)):
                raise ValueError("a latency rule needs a number `ms`")
            if action == "wait_for" and not (isinstance(rule.get("seen"), str) and isinstance(rule.get("ms"), (int, float))):
                raise ValueError("a wait_for rule needs a string `seen` (an operation) and a number `ms` (the most it waits)")
            if rule.get("ms") is not None and not isinstance(rule.get("ms"), (int, float)):
                raise ValueError("`ms` must be a number")
            if rule.get("context_lacks") is not None and not isinstance(rule.get("context_lacks"), str):
                raise ValueError("`context_lacks` must be a string (an encryption context key)")
            times = rule.get("times")
            if times is not None and (not isinstance(times, int) or times < 0):
                raise ValueError("`times` must be a non-negative integer or null")
            checked.append({**rule, "_used": 0})
        with self.lock:
            self.rules = checked

    def configure(self, config: dict) -> None:
        with self.lock:
            if "latency_ms" in config:
                self.latency_ms = float(config["latency_ms"] or 0)
            if "quota_rps" in config or "quota_burst" in config:
                self.set_quota(config.get("quota_rps"), config.get("quota_burst"))


class ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address,
        upstream: urllib.parse.SplitResult,
        state: State,
        tls: ssl.SSLContext | None = None,
    ):
        self.upstream = upstream
        self.state = state
        self.tls = tls
        super().__init__(address, Handler)

    def handle_error(self, request, client_address):
        # A client that goes away (timeout, reset) is part of the game, not an error.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Answers go out in two writes (headers, body): with Nagle on, a client that
    # keeps its connection alive would wait for a delayed ACK (~40 ms) on every
    # request after its first. Real KMS adds no such delay.
    disable_nagle_algorithm = True
    server_version = "kms_fault_proxy"
    sys_version = ""

    server: ProxyServer
    over_tls = False

    def setup(self):
        # With a certificate, sniff the first byte: 0x16 starts a TLS handshake.
        # Done here, in the connection's own thread, so that a client that fails
        # the handshake (an unknown CA, say) never stalls the accept loop.
        if self.server.tls is not None:
            try:
                first = self.request.recv(1, socket.MSG_PEEK)
            except OSError:
                first = b""
            if first == b"\x16":
                with self.server.state.lock:
                    self.server.state.tls_handshakes += 1
                self.request = self.server.tls.wrap_socket(self.request, server_side=True)
                self.over_tls = True
        super().setup()

    def finish(self):
        try:
            super().finish()
        finally:
            if self.over_tls:
                # The plain socket was detached by wrap_socket; close the TLS one.
                self.request.close()

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        pass

    # Every method goes through one path.
    def do_GET(self):
        # Set by dispatch once the request is counted: it is in flight until answered.
        self.counted: tuple[str | None] | None = None
        try:
            self.dispatch()
        finally:
            if self.counted is not None:
                self.server.state.done(self.counted[0])

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_GET

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def dispatch(self):
        self.entry = None
        body = self.read_body()
        if self.path.startswith("/_proxy/"):
            self.control(body)
            return
        state = self.server.state
        target = self.headers.get("X-Amz-Target") or ""
        op = target.rsplit(".", 1)[-1] if target else None
        service = target.rsplit(".", 1)[0] if "." in target else None
        authorization = self.headers.get("Authorization") or ""
        match = CREDENTIAL_REGION.search(authorization)
        region = match.group(1) if match else None
        match = CREDENTIAL_AKID.search(authorization)
        entry = {
            "method": self.command,
            "path": self.path,
            "akid": match.group(1) if match else NONE,
            "token": self.headers.get("X-Amz-Security-Token") or NONE,
            "tls": "yes" if self.over_tls else "no",
        }
        form = self.query_form(body)
        if op is None:
            op = form.get("Action")
        signed_for = CREDENTIAL_SERVICE.search(authorization)
        if op is None and signed_for and signed_for.group(1) == "s3":
            op = "s3:" + self.command
        for name, value in form.items():
            entry["form." + name] = value
        kms_request = self.kms_json(body) if target else {}
        for name in ("KeyId", "DestinationKeyId"):
            if isinstance(kms_request.get(name), str):
                entry["kms." + name] = kms_request[name]
        context = kms_request.get("DestinationEncryptionContext", kms_request.get("EncryptionContext"))
        if not isinstance(context, dict):
            context = {}
        if "EncryptionContext" in kms_request or "DestinationEncryptionContext" in kms_request:
            entry["kms.context"] = json.dumps(context, sort_keys=True)
        entry["op"] = op or NONE
        entry["service"] = service or NONE
        entry["region"] = region or NONE
        self.entry = entry
        state.count(op, service, region, entry)
        self.counted = (op,)

        if not state.take_token():
            self.kms_error(400, "ThrottlingException", "Rate exceeded (quota of kms_fault_proxy)")
            return
        rule = state.match(op, service, region, context)
        extra_ms = 0.0
        rewrite = None
        if rule is not None:
            action = rule["action"]
            if action not in ("latency", "wait_for") and rule.get("ms"):
                # A fault that takes its time, as a real overloaded service does.
                time.sleep(float(rule["ms"]) / 1000.0)
            if action == "error":
                self.kms_error(int(rule.get("status") or 400), rule["code"], "injected by kms_fault_proxy")
                return
            if action == "status":
                status = int(rule["status"])
                error_type = STATUS_ERROR_TYPES.get(status, "InternalFailure")
                self.kms_error(status, error_type, "injected by kms_fault_proxy")
                return
            if action == "answer":
                headers = list((rule.get("headers") or {}).items())
                self.send(int(rule.get("status") or 200), headers, (rule.get("body") or "").encode())
                return
            if action == "flood":
                self.flood(int(rule["bytes"]), bool(rule.get("chunked")))
                return
            if action == "hang":
                self.hang()
                return
            if action == "reset":
                self.reset()
                return
            if action == "latency":
                extra_ms = float(rule["ms"])
            if action == "wait_for":
                state.wait_for(rule["seen"], float(rule["ms"]))
            if action == "drop_key_id" and "KeyId" in kms_request:
                del kms_request["KeyId"]
                body = json.dumps(kms_request).encode()
            if action in REWRITES:
                rewrite = rule
        delay = (state.latency_ms + extra_ms) / 1000.0
        if delay > 0:
            time.sleep(delay)
        if service == "AmazonSSM" and op == "GetParameters":
            self.ssm_get_parameters(body, kms_request, rewrite)
            return
        self.forward(body, op, rewrite)

    @staticmethod
    def kms_json(body: bytes) -> dict:
        """The JSON object of a KMS request; {} when the body is not one."""
        try:
            parsed = json.loads(body or b"{}")
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}

    def query_form(self, body: bytes) -> dict[str, str]:
        """The parameters of a query-protocol request (STS): form body, else query string."""
        content_type = (self.headers.get("Content-Type") or "").lower()
        text = ""
        if "application/x-www-form-urlencoded" in content_type:
            text = body.decode("utf-8", "replace")
        elif "?" in self.path:
            text = self.path.split("?", 1)[1]
        if "Action=" not in text:
            return {}
        return dict(urllib.parse.parse_qsl(text, keep_blank_values=True))

    # -- answers ------------------------------------------------------------

    def send(self, status: int, headers: list[tuple[str, str]], body: bytes):
        self.log_request(status)
        entry = getattr(self, "entry", None)
        if entry is not None:
            fields = {"status": str(status)}
            issued = ISSUED_AKID.search(body)
            if issued:
                fields["issued_akid"] = issued.group(1).decode("utf-8", "replace")
            issued = ISSUED_TOKEN.search(body)
            if issued:
                fields["issued_token"] = issued.group(1).decode("utf-8", "replace")
            self.server.state.update(entry, **fields)
        self.send_response_only(status)
        names = {name.lower() for name, _ in headers}
        if "server" not in names:
            self.send_header("Server", self.version_string())
        if "date" not in names:
            self.send_header("Date", self.date_time_string())
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def send_json(self, status: int, obj):
        body = json.dumps(obj).encode()
        self.send(status, [("Content-Type", "application/json")], body)

    def kms_error(self, status: int, code: str, message: str):
        body = json.dumps({"__type": code, "message": message}).encode()
        self.send(
            status,
            [
                ("Content-Type", "application/x-amz-json-1.1"),
                ("x-amzn-ErrorType", code),
                ("x-amzn-RequestId", "00000000-0000-0000-0000-kmsfaultproxy"),
            ],
            body,
        )

    def flood(self, size: int, chunked: bool):
        """A 200 answer of `size` bytes that is never in memory here: the start
        of a JSON object, then filler, written 64 KiB at a time until done or
        until the client goes away."""
        self.close_connection = True
        entry = getattr(self, "entry", None)
        if entry is not None:
            self.server.state.update(entry, status="200")
        self.log_request(200)
        self.send_response_only(200)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(size))
        self.send_header("Connection", "close")
        self.end_headers()
        block = 65536
        head = b'{"Plaintext":"'
        filler = b"A" * block
        sent = 0
        try:
            self.wfile.flush()
            while sent < size:
                data = (head + filler)[: min(block, size - sent)] if sent == 0 else filler[: min(block, size - sent)]
                if chunked:
                    self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")
                else:
                    self.wfile.write(data)
                sent += len(data)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass  # the client went away: what a capped client does

    def hang(self):
        """Never answer: hold the connection until the client goes away."""
        self.close_connection = True
        sock = self.connection
        try:
            while True:
                readable, _, _ = select.select([sock], [], [], 1.0)
                if readable and not sock.recv(65536):
                    return  # the client closed its side
        except OSError:
            return

    def reset(self):
        """Close the socket abruptly: RST, no answer, no FIN."""
        self.close_connection = True
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # detach(): the socket object (and the rfile made from it) no longer owns
            # the descriptor, so nothing can shutdown(SHUT_WR) it, which would send a
            # FIN first. Closing it with linger 0 sends the RST.
            os.close(sock.detach())
        except OSError:
            pass

    def upstream_call(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        upstream = self.server.upstream
        return relay(
            self.command, upstream.hostname, upstream.port or 80, self.path, self.headers, body, UPSTREAM_TIMEOUT
        )

    def forward(self, body: bytes, op: str | None = None, rewrite: dict | None = None):
        try:
            status, headers, answer = self.upstream_call(body)
        except (OSError, http.client.HTTPException) as exc:
            self.kms_error(502, "BadGateway", f"kms_fault_proxy: upstream failed: {exc}")
            return
        if rewrite is not None and status == 200:
            answer = json.dumps(rewrite_answer(op, json.loads(answer), rewrite)).encode()
        self.send(status, headers, answer)

    def ssm_get_parameters(self, body: bytes, request: dict, rewrite: dict | None):
        """GetParameters as real SSM answers it (module docstring): one moto call
        per requested name, ARNs translated, `Selector` added."""
        names = request.get("Names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(names) > 10:
            self.forward(body, "GetParameters", rewrite)
            return
        parameters, invalid = [], []
        headers: list[tuple[str, str]] = []
        try:
            for requested in names:
                found, status, headers, answer = None, 200, headers, b""
                for candidate, arn, selector in ssm_candidates(requested):
                    one = json.dumps({**request, "Names": [candidate]}).encode()
                    status, headers, answer = self.upstream_call(one)
                    if status != 200:
                        break
                    got = json.loads(answer).get("Parameters") or []
                    if got:
                        found = got[0]
                        if selector:
                            found["Selector"] = selector
                        if arn:
                            found["Name"] = arn
                        break
                if status != 200:
                    self.send(status, headers, answer)
                    return
                if found is None:
                    invalid.append(requested)
                else:
                    parameters.append(found)
        except (OSError, http.client.HTTPException) as exc:
            self.kms_error(502, "BadGateway", f"kms_fault_proxy: upstream failed: {exc}")
            return
        data = {"Parameters": parameters, "InvalidParameters": invalid}
        if rewrite is not None:
            data = rewrite_answer("GetParameters", data, rewrite)
        kept = [(n, v) for n, v in headers if n.lower() not in ("x-amz-crc32",)]
        if not any(n.lower() == "content-type" for n, _ in kept):
            kept.append(("Content-Type", "application/x-amz-json-1.1"))
        self.send(200, kept, json.dumps(data).encode())

    # -- control API ----------------------------------------------------------

    def control(self, body: bytes):
        state = self.server.state
        path = self.path.split("?", 1)[0]
        try:
            if path == "/_proxy/counts" and self.command == "GET":
                self.send_json(200, state.snapshot())
                return
            if path == "/_proxy/requests" and self.command == "GET":
                self.send_json(200, state.request_log())
                return
            if path == "/_proxy/reset" and self.command == "POST":
                state.reset()
                self.send_json(200, {"ok": True})
                return
            if path == "/_proxy/rules" and self.command == "POST":
                parsed = json.loads(body or b"{}")
                rules = parsed.get("rules") if isinstance(parsed, dict) else None
                if not isinstance(rules, list):
                    raise ValueError('expected {"rules": [...]}')
                state.set_rules(rules)
                self.send_json(200, {"ok": True, "rules": len(rules)})
                return
            if path == "/_proxy/config" and self.command == "POST":
                parsed = json.loads(body or b"{}")
                if not isinstance(parsed, dict):
                    raise ValueError("expected a JSON object")
                state.configure(parsed)
                self.send_json(200, {"ok": True})
                return
        except (ValueError, TypeError, KeyError) as exc:
            self.send_json(400, {"error": str(exc)})
            return
        self.send_json(404, {"error": f"no control endpoint {self.command} {path}"})


def ssm_candidates(requested: str) -> list[tuple[str, str | None, str | None]]:
    """What to ask moto for one requested SSM name: (name for moto, the ARN to put
    back as `Name` or None, the selector or None), in the order to try."""
    match = SSM_PARAMETER_ARN.match(requested)
    rest = match.group(1) if match else requested
    base, sep, selector_text = rest.partition(":")
    selector = ":" + selector_text if sep else None
    suffix = selector or ""
    if not match:
        return [(requested, None, selector)]
    arn = requested[: len(requested) - len(suffix)] if suffix else requested
    if "/" in base:
        names = ["/" + base]
    else:
        names = [base, "/" + base]
    return [(name + suffix, arn, selector) for name in names]


def rewrite_answer(op: str | None, data, rule: dict):
    """Edits an answer's items as the rule says (module docstring, "Rewritten answers")."""
    if op not in ITEM_LISTS or not isinstance(data, dict):
        return data
    field = ITEM_LISTS[op]
    items = data.get(field) if field else [data]
    if not isinstance(items, list):
        return data
    action = rule["action"]

    def pick(key: str | None) -> dict | None:
        for item in items:
            if not isinstance(item, dict):
                continue
            if key is None or key in str(item.get("Name", "")) or key in str(item.get("ARN", "")):
                return item
        return None

    if action == "reorder":
        items.reverse()
    elif action == "swap_names":
        keys = rule.get("items") or [None, None]
        first = pick(keys[0])
        second = pick(keys[1]) if keys[1] is not None else next((i for i in items if i is not first), None)
        if first is not None and second is not None:
            first["Name"], second["Name"] = second.get("Name"), first.get("Name")
    elif action in ("drop_item", "item_error") and field:
        item = pick(rule.get("item"))
        if item is not None:
            items.remove(item)
            if action == "item_error" and op == "GetParameters":
                data.setdefault("InvalidParameters", []).append(item.get("Name"))
            elif action == "item_error":
                data.setdefault("Errors", []).append(
                    {"SecretId": item.get("ARN"), "ErrorCode": rule["code"], "Message": "injected by kms_fault_proxy"}
                )
    elif action == "foreign_arn":
        item = pick(rule.get("item"))
        for key in ("ARN", "Name"):
            value = item.get(key) if item is not None else None
            if isinstance(value, str) and value.startswith("arn:"):
                parts = value.split(":", 5)
                if len(parts) == 6:
                    if isinstance(rule.get("arn_region"), str):
                        parts[3] = rule["arn_region"]
                    if isinstance(rule.get("arn_account"), str):
                        parts[4] = rule["arn_account"]
                    item[key] = ":".join(parts)
    return data


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"--listen HOST:PORT, not {text!r}")
    return host, int(port)


def watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.2)
        if os.getppid() != parent:
            os._exit(0)


def main() -> int:
    parser = argparse.ArgumentParser(description="Fault-injecting reverse proxy for the KMS, Secrets Manager and SSM JSON APIs.")
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:5000 (moto_server)")
    parser.add_argument("--listen", default="127.0.0.1:0", type=parse_listen, help="HOST:PORT (default 127.0.0.1:0)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added before forwarding every request")
    parser.add_argument("--quota-rps", type=float, default=None, help="token bucket rate; beyond it ThrottlingException")
    parser.add_argument("--quota-burst", type=float, default=None, help="token bucket size (default: the rate)")
    parser.add_argument("--tls-cert", default=None, help="PEM certificate (chain): also serve TLS on the port")
    parser.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    args = parser.parse_args()
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")

    upstream = urllib.parse.urlsplit(args.upstream)
    if upstream.scheme != "http" or not upstream.hostname:
        parser.error("--upstream must be http://HOST:PORT")

    threading.Thread(target=watch_parent, args=(os.getppid(),), name="parent watch", daemon=True).start()
    state = State(args.latency_ms, args.quota_rps, args.quota_burst)
    tls = None
    if args.tls_cert is not None:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    server = ProxyServer(args.listen, upstream, state, tls)
    host, port = server.server_address[:2]
    print(f"listening on {host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
