"""Optional JSON-lines access log, one line per finished request.

Fields follow Envoy's default access log where they exist (start_time,
duration ms, response_code, response_flags, upstream_host, upstream_cluster,
route_name) plus the source pod and the listener. Lines are buffered and
written by the worker every 64 lines or on close; each worker appends to
the same file (O_APPEND writes of whole lines do not interleave).
"""

from __future__ import annotations

import json
import os
import time

_FLUSH_EVERY = 64


class AccessLog:
    def __init__(self, path: str):
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._lines = []

    def write(self, req, code, flags, now, reply_bytes):
        route, chain = req.route, req.chain
        line = {
            "start_time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(
                time.time() - (now - req.start))),
            "duration_ms": round((now - req.start) * 1000, 3),
            "listener": chain.name if chain is not None else None,
            "protocol": chain.codec if chain is not None else None,
            "kind": req.kind,
            "route_name": route.name if route is not None else None,
            "upstream_cluster": req.cluster.name if req.cluster is not None else None,
            "attempts": req.attempt,
            "response_code": code,
            "response_flags": flags,
            "source_pod": req.pod,
            "bytes_received": len(req.data),
            "bytes_sent": reply_bytes,
        }
        self._lines.append(json.dumps(line, separators=(",", ":")))
        if len(self._lines) >= _FLUSH_EVERY:
            self.flush()

    def flush(self):
        if self._lines:
            os.write(self._fd, ("\n".join(self._lines) + "\n").encode())
            self._lines.clear()

    def close(self):
        self.flush()
        os.close(self._fd)
