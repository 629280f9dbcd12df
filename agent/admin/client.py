"""Client of an admin socket: one request per connection, JSON decoded."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Optional


class AdminError(Exception):
    """The socket is missing, refused, timed out, or answered with an error status."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


class AdminClient:
    def __init__(self, path: str, timeout: float = 2.0):
        self.path = path
        self.timeout = timeout

    def request(self, method: str, target: str, body=None, *, ok=(200, 202)):
        """Returns (status, decoded body): a dict/list for JSON, else str."""
        payload = json.dumps(body).encode() if body is not None else None
        conn = _UnixConnection(self.path, self.timeout)
        try:
            conn.request(method, target, body=payload,
                         headers={"Content-Type": "application/json"} if payload else {})
            resp = conn.getresponse()
            raw = resp.read()
        except FileNotFoundError:
            raise AdminError(f"no admin socket at {self.path}") from None
        except (ConnectionRefusedError, socket.timeout, OSError) as e:
            raise AdminError(f"admin socket {self.path}: {e.strerror or e}") from None
        finally:
            conn.close()
        data = json.loads(raw) if "json" in (resp.getheader("Content-Type") or "") else raw.decode()
        if resp.status not in ok:
            reason = data.get("error") if isinstance(data, dict) else data
            raise AdminError(f"{method} {target}: {resp.status} {reason}", resp.status)
        return resp.status, data

    def get(self, target: str, **kw):
        return self.request("GET", target, **kw)[1]

    def post(self, target: str, body=None, **kw):
        return self.request("POST", target, body, **kw)[1]

    def alive(self) -> bool:
        try:
            self.request("GET", "/healthz", ok=(200, 503))
            return True
        except AdminError:
            return False
