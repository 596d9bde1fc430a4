"""What the test servers share (kms_fault_proxy.py, aws_standins.py): relaying
one HTTP request to an upstream server and reading its whole answer.

Standard library only; imported from the scripts' own folder.
"""

from __future__ import annotations

import http.client

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
}


def relay(method: str, host: str, port: int, path: str, headers, body: bytes, timeout: float,
          drop=("content-length",)) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send one request (hop-by-hop headers removed, `Connection: close`) and return
    the status, the answer's end-to-end headers except those named in `drop`
    (lower case), and the body. Raises OSError or http.client.HTTPException."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            if name.lower() in HOP_BY_HOP or name.lower() == "content-length":
                continue
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.putheader("Connection", "close")
        conn.endheaders(body)
        response = conn.getresponse()
        answer = response.read()
        kept = [
            (name, value)
            for name, value in response.getheaders()
            if name.lower() not in HOP_BY_HOP and name.lower() not in drop
        ]
        return response.status, kept, answer
    finally:
        conn.close()
