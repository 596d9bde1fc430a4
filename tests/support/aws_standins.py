#!/usr/bin/env python3
"""Local stand-ins for the AWS services the SDK's credential chain and HTTP
stack talk to, for tests/credentials.rs and tests/networks.rs.

    python3 tests/support/aws_standins.py MODE [options]

Modes:

  imds           EC2 instance metadata, IMDSv2 only: `PUT /latest/api/token`
                 (needs `X-aws-ec2-metadata-token-ttl-seconds`, answers the token
                 and the same header), then, with `X-aws-ec2-metadata-token`,
                 `GET /latest/meta-data/iam/security-credentials/` (the role name)
                 and `…/security-credentials/ROLE` (the credentials, as JSON).
                 A GET without the token gets 401, as on EC2 with IMDSv1 off.
  container      ECS / EKS Pod Identity credentials: `GET --path` answers the
                 credentials as JSON (AccessKeyId, SecretAccessKey, Token,
                 Expiration); the `Authorization` header received is logged.
  sso            The IAM Identity Center portal: `GET /federation/credentials
                 ?role_name=R&account_id=A` with `x-amz-sso_bearer_token` equal
                 to --bearer answers {"roleCredentials": {…}}; else 401.
  forward-proxy  An HTTP forward proxy: absolute-form requests are forwarded,
                 `CONNECT host:port` is tunnelled, both only to loopback hosts
                 (127.0.0.0/8, localhost). Anything else is refused (403) without
                 a DNS lookup: the test machine has no network.

Credentials (imds, container, sso): --akid, --secret, --token; they expire an
hour after they are served.

Every mode prints exactly one line, `listening on 127.0.0.1:PORT`, once it
accepts connections, serves until killed or until its parent exits, and logs
each request as one line, readable at `GET /_standin/log` (text/plain, oldest
first; this path is never logged itself):

    imds           PUT /latest/api/token ttl=21600 token=- -> 200
                   GET /latest/meta-data/iam/security-credentials/ ttl=- token=TOKEN -> 200
    container      GET /creds authorization=VALUE -> 200          ("-" when absent)
    sso            GET /federation/credentials?… bearer=VALUE -> 200
    forward-proxy  CONNECT host:port -> 200 | 403
                   FORWARD POST http://host:port/path op=Decrypt -> 200 | 403 | 502

Standard library only (Python 3.11).
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import select
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from http_relay import relay


IMDS_TOKEN = "kmsenv-imds-session-token"


def expiration(seconds: int = 3600) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds))


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, args):
        self.args = args
        self.lock = threading.Lock()
        self.lines: list[str] = []
        super().__init__(address, Handler)

    def log(self, line: str) -> None:
        with self.lock:
            self.lines.append(line)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "aws_standins"
    sys_version = ""

    server: Server
    # Unbuffered reads: after a CONNECT, every byte the client sends must still be
    # in the socket for the tunnel, not in a read-ahead buffer.
    rbufsize = 0
    # Headers and body go out in two writes; without this a keep-alive client
    # would wait for a delayed ACK on every request after its first.
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        pass

    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_GET

    def do_CONNECT(self):
        if self.server.args.mode != "forward-proxy":
            self.answer(405, b"CONNECT only in forward-proxy mode\n")
            return
        self.connect_tunnel()

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def answer(self, status: int, body: bytes, content_type: str = "text/plain", headers=()):
        self.send_response_only(status)
        self.send_header("Server", self.version_string())
        self.send_header("Date", self.date_time_string())
        self.send_header("Content-Type", content_type)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def answer_json(self, status: int, obj, headers=()):
        self.answer(status, json.dumps(obj).encode(), "application/json", headers)

    def dispatch(self):
        body = self.read_body()
        if self.path == "/_standin/log":
            with self.server.lock:
                text = "".join(line + "\n" for line in self.server.lines)
            self.answer(200, text.encode())
            return
        mode = self.server.args.mode
        if mode == "forward-proxy":
            self.forward(body)
        elif mode == "imds":
            self.imds()
        elif mode == "container":
            self.container()
        elif mode == "sso":
            self.sso()

    # -- credentials ----------------------------------------------------------

    def imds(self):
        args = self.server.args
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        token = self.headers.get("X-aws-ec2-metadata-token")
        status, body, content_type, headers = self.imds_answer(args, ttl, token)
        self.server.log(f"{self.command} {self.path} ttl={ttl or '-'} token={token or '-'} -> {status}")
        self.answer(status, body, content_type, headers)

    def imds_answer(self, args, ttl, token):
        creds_path = "/latest/meta-data/iam/security-credentials/"
        if self.path == "/latest/api/token":
            if self.command != "PUT":
                return 405, b"", "text/plain", ()
            if not ttl or not ttl.isdigit():
                return 400, b"", "text/plain", ()
            return 200, IMDS_TOKEN.encode(), "text/plain", [("X-aws-ec2-metadata-token-ttl-seconds", ttl)]
        if self.command != "GET":
            return 405, b"", "text/plain", ()
        if token != IMDS_TOKEN:
            return 401, b"", "text/plain", ()
        if self.path == creds_path:
            return 200, args.role.encode(), "text/plain", ()
        if self.path == creds_path + args.role:
            creds = {
                "Code": "Success",
                "LastUpdated": expiration(0),
                "Type": "AWS-HMAC",
                "AccessKeyId": args.akid,
                "SecretAccessKey": args.secret,
                "Token": args.token,
                "Expiration": expiration(),
            }
            return 200, json.dumps(creds).encode(), "text/plain", ()
        return 404, b"", "text/plain", ()

    def container(self):
        args = self.server.args
        authorization = self.headers.get("Authorization")
        if self.command == "GET" and self.path == args.path:
            status = 200
            creds = {
                "AccessKeyId": args.akid,
                "SecretAccessKey": args.secret,
                "Token": args.token,
                "Expiration": expiration(),
            }
        else:
            status = 404
            creds = {"code": "NotFound", "message": f"no {self.command} {self.path}"}
        self.server.log(f"{self.command} {self.path} authorization={authorization or '-'} -> {status}")
        self.answer_json(status, creds)

    def sso(self):
        args = self.server.args
        bearer = self.headers.get("x-amz-sso_bearer_token")
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if self.command != "GET" or url.path != "/federation/credentials":
            status, answer = 404, {"message": f"no {self.command} {url.path}"}
        elif bearer != args.bearer:
            status, answer = 401, {"message": "Session token not found or invalid"}
        elif query.get("role_name") != args.role or query.get("account_id") != args.account:
            status, answer = 403, {"message": "No access"}
        else:
            status = 200
            answer = {
                "roleCredentials": {
                    "accessKeyId": args.akid,
                    "secretAccessKey": args.secret,
                    "sessionToken": args.token,
                    "expiration": int((time.time() + 3600) * 1000),
                }
            }
        self.server.log(f"{self.command} {self.path} bearer={bearer or '-'} -> {status}")
        headers = [] if status == 200 else [("x-amzn-ErrorType", "UnauthorizedException")]
        self.answer_json(status, answer, headers)

    # -- forward proxy --------------------------------------------------------

    def forward(self, body: bytes):
        url = urllib.parse.urlsplit(self.path)
        target = self.headers.get("X-Amz-Target") or ""
        op = target.rsplit(".", 1)[-1] if target else "-"
        what = f"FORWARD {self.command} {self.path} op={op}"
        if url.scheme != "http" or not url.hostname:
            self.server.log(f"{what} -> 400")
            self.answer(400, b"forward-proxy: absolute-form http:// request expected\n")
            return
        if not is_loopback(url.hostname):
            self.server.log(f"{what} -> 403")
            self.answer(403, b"forward-proxy: only loopback destinations (no network here)\n")
            return
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        try:
            status, headers, answer = relay(
                self.command, url.hostname, url.port or 80, path, self.headers, body, 60,
                drop=("content-length", "server", "date"),
            )
        except (OSError, http.client.HTTPException) as exc:
            self.server.log(f"{what} -> 502")
            self.answer(502, f"forward-proxy: upstream failed: {exc}\n".encode())
            return
        self.server.log(f"{what} -> {status}")
        content_type = next((v for n, v in headers if n.lower() == "content-type"), "application/octet-stream")
        headers = [(n, v) for n, v in headers if n.lower() != "content-type"]
        self.answer(status, answer, content_type, headers)

    def connect_tunnel(self):
        host, _, port = self.path.rpartition(":")
        what = f"CONNECT {self.path}"
        if not host or not port.isdigit():
            self.server.log(f"{what} -> 400")
            self.close_connection = True
            self.answer(400, b"forward-proxy: CONNECT host:port expected\n")
            return
        if not is_loopback(host):
            self.server.log(f"{what} -> 403")
            self.close_connection = True
            self.answer(403, b"forward-proxy: only loopback destinations (no network here)\n")
            return
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        except OSError:
            self.server.log(f"{what} -> 502")
            self.close_connection = True
            self.answer(502, b"forward-proxy: cannot connect\n")
            return
        self.server.log(f"{what} -> 200")
        self.send_response_only(200, "Connection Established")
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        client = self.connection
        upstream.settimeout(None)
        try:
            # rfile is unbuffered (rbufsize = 0): no byte of the tunnel is stuck in it.
            sockets = [client, upstream]
            while True:
                readable, _, _ = select.select(sockets, [], [], 60)
                if not readable:
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is client else client).sendall(data)
        except OSError:
            return
        finally:
            upstream.close()


def watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.2)
        if os.getppid() != parent:
            os._exit(0)


def main() -> int:
    parser = argparse.ArgumentParser(description="Local stand-ins for AWS credential sources and a forward proxy.")
    parser.add_argument("mode", choices=["imds", "container", "sso", "forward-proxy"])
    parser.add_argument("--listen", default="127.0.0.1", help="address to bind (port: any free one)")
    parser.add_argument("--akid", default="ASIASTANDIN")
    parser.add_argument("--secret", default="standin-secret")
    parser.add_argument("--token", default="standin-session-token")
    parser.add_argument("--role", default="kmsenv-instance-role", help="imds: role name; sso: role_name")
    parser.add_argument("--path", default="/creds", help="container: the credentials path")
    parser.add_argument("--bearer", default="kmsenv-sso-access-token", help="sso: the expected access token")
    parser.add_argument("--account", default="123456789012", help="sso: the expected account_id")
    args = parser.parse_args()

    threading.Thread(target=watch_parent, args=(os.getppid(),), name="parent watch", daemon=True).start()
    server = Server((args.listen, 0), args)
    host, port = server.server_address[:2]
    print(f"listening on {host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
