"""HTTP/1.1 on a unix socket, asyncio, one handler per (method, path).

Deliberately tiny: requests are small and few (probes, CLI). One request per
connection (`Connection: close`), bounded head and body, handlers may be sync
or async and return a Response, a dict/list (JSON) or a str (text).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Dict, Tuple, Union
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger("nodemesh.admin")

MAX_HEAD = 16 * 1024
MAX_BODY = 1024 * 1024
READ_TIMEOUT = 10.0
REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found",
           405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
           500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass
class Request:
    method: str
    path: str
    query: Dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body or b"{}")


@dataclass
class Response:
    status: int = 200
    body: Union[bytes, str, dict, list, None] = None
    content_type: str = ""
    headers: Dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        body, ctype = self.body, self.content_type
        if isinstance(body, (dict, list)):
            body, ctype = json.dumps(body, indent=1, default=str).encode() + b"\n", ctype or "application/json"
        elif isinstance(body, str):
            body, ctype = body.encode(), ctype or "text/plain; charset=utf-8"
        body = body or b""
        head = [f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Status')}",
                f"Content-Length: {len(body)}", "Connection: close"]
        if ctype:
            head.append(f"Content-Type: {ctype}")
        head += [f"{k}: {v}" for k, v in self.headers.items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body


Handler = Callable[[Request], Union[Response, dict, list, str, Awaitable]]


class AdminServer:
    def __init__(self, path: str):
        self.path = path
        self.routes: Dict[Tuple[str, str], Handler] = {}
        self._server = None

    def route(self, method: str, path: str, handler: Handler):
        self.routes[(method.upper(), path)] = handler

    def get(self, path: str):
        return lambda fn: (self.route("GET", path, fn), fn)[1]

    def post(self, path: str):
        return lambda fn: (self.route("POST", path, fn), fn)[1]

    async def start(self):
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        if os.path.exists(self.path):
            os.unlink(self.path)            # stale socket from a previous run
        old = os.umask(0o177)               # never a moment with a wider mode
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=self.path)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        return self

    async def close(self):
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            request = await asyncio.wait_for(self._read(reader), READ_TIMEOUT)
            response = await self._dispatch(request) if isinstance(request, Request) else request
        except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            writer.close()
            return
        try:
            writer.write(response.encode())
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _read(self, reader):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return Response(413, {"error": "request head too large"})
        if len(head) > MAX_HEAD:
            return Response(413, {"error": "request head too large"})
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _ = lines[0].split(" ", 2)
        except ValueError:
            return Response(400, {"error": "malformed request line"})
        headers = dict(l.split(":", 1) for l in lines[1:] if ":" in l)
        length = int({k.strip().lower(): v for k, v in headers.items()}.get("content-length", "0") or 0)
        if length > MAX_BODY:
            return Response(413, {"error": "request body too large"})
        body = await reader.readexactly(length) if length else b""
        url = urlsplit(target)
        return Request(method.upper(), url.path, dict(parse_qsl(url.query)), body)

    async def _dispatch(self, request: Request) -> Response:
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            allowed = [m for (m, p) in self.routes if p == request.path]
            if allowed:
                return Response(405, {"error": f"{request.method} not allowed", "allowed": allowed})
            return Response(404, {"error": f"no such endpoint {request.path}",
                                  "endpoints": sorted({p for _, p in self.routes})})
        try:
            result = handler(request)
            if inspect.isawaitable(result):
                result = await result
        except ValueError as e:     # handlers raise ValueError for bad parameters
            return Response(400, {"error": str(e)})
        except Exception as e:      # noqa: BLE001 - report, keep serving
            log.exception("admin handler %s %s failed", request.method, request.path)
            return Response(500, {"error": f"{type(e).__name__}: {e}"})
        return result if isinstance(result, Response) else Response(200, result)
