"""A scripted Kubernetes API server: real HTTP, the API's JSON and watch streams.

Enough of /api/v1/pods and /api/v1/namespaces for the official client's
list and Watch: lists with metadata.resourceVersion, the spec.nodeName field
selector, watches that replay the event log after a resourceVersion and
then stream (chunked, one JSON event per line), bookmarks, ERROR 410 for a
compacted version, and scripted failures (HTTP errors, hangs). The test
changes objects through this class; every request is recorded.
"""

import http.server
import json
import threading
import time
import urllib.parse

RESOURCES = {"pods": ("Pod", "PodList"), "namespaces": ("Namespace", "NamespaceList")}


def status_object(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class Resource:
    def __init__(self, kind):
        self.kind, self.list_kind = RESOURCES[kind]
        self.objects = {}        # key -> object (current state)
        self.log = []            # (rv, type, object)
        self.compacted = 0       # watches from an rv below this get 410
        self.expiries = 0        # bumped by expire(): open watches get 410
        self.failures = []       # [(verb, status or 'hang', seconds)]
        self.lists = 0
        self.watches = 0


class ScriptedAPI:
    def __init__(self):
        self.rv = 100
        self.res = {k: Resource(k) for k in RESOURCES}
        self.requests = []
        self.cond = threading.Condition()
        self.closing = False
        self.epoch = 0           # bumped to end every open watch
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                api._handle(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()

    # -- the script -----------------------------------------------------------

    def _next_rv(self):
        self.rv += 1
        return str(self.rv)

    def put(self, kind, obj, event=None, deliver=True):
        """Create or update an object; deliver=False changes state without an event
        (as if it happened while the watch was broken and fell out of the window)."""
        with self.cond:
            r = self.res[kind]
            key = self._key(obj)
            obj = json.loads(json.dumps(obj))
            obj["metadata"]["resourceVersion"] = self._next_rv()
            event = event or ("MODIFIED" if key in r.objects else "ADDED")
            r.objects[key] = obj
            if deliver:
                r.log.append((self.rv, event, obj))
            self.cond.notify_all()
        return obj

    def delete(self, kind, obj, deliver=True):
        with self.cond:
            r = self.res[kind]
            gone = r.objects.pop(self._key(obj))
            gone = json.loads(json.dumps(gone))
            gone["metadata"]["resourceVersion"] = self._next_rv()
            if deliver:
                r.log.append((self.rv, "DELETED", gone))
            self.cond.notify_all()

    def send_raw(self, kind, event_type, obj):
        """Append an arbitrary event (malformed objects) to the log."""
        with self.cond:
            self._next_rv()
            self.res[kind].log.append((self.rv, event_type, obj))
            self.cond.notify_all()

    def bookmark(self, kind):
        with self.cond:
            self._next_rv()
            obj = {"kind": self.res[kind].kind, "apiVersion": "v1",
                   "metadata": {"resourceVersion": str(self.rv),
                                "annotations": {"k8s.io/initial-events-end": "true"}}}
            self.res[kind].log.append((self.rv, "BOOKMARK", obj))
            self.cond.notify_all()

    def expire(self, kind):
        """Compact: open watches get ERROR 410, and so does any resume from before now."""
        with self.cond:
            self.res[kind].compacted = self.rv
            self.res[kind].expiries += 1
            self.cond.notify_all()

    def fail(self, kind, verb, status, times=1, seconds=0.0):
        """The next `times` requests of verb ('list'/'watch') answer `status`, or,
        with status='hang', send nothing for `seconds`."""
        with self.cond:
            self.res[kind].failures += [(verb, status, seconds)] * times

    def end_watches(self):
        with self.cond:
            self.epoch += 1
            self.cond.notify_all()

    def count(self, kind, verb) -> int:
        return getattr(self.res[kind], "lists" if verb == "list" else "watches")

    @staticmethod
    def _key(obj):
        m = obj["metadata"]
        return (m.get("namespace", ""), m["name"])

    # -- HTTP -----------------------------------------------------------------

    def _handle(self, h):
        url = urllib.parse.urlsplit(h.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        self.requests.append((url.path, query))
        kind = {"/api/v1/pods": "pods", "/api/v1/namespaces": "namespaces"}.get(url.path)
        if kind is None:
            return self._json(h, 404, status_object(404, "NotFound", f"{url.path} not found"))
        watch = query.get("watch") in ("true", "1", "True")
        verb = "watch" if watch else "list"
        failure = self._take_failure(kind, verb)
        if failure:
            _, status, seconds = failure
            if status == "hang":
                self._sleep(seconds)
                return self._close(h)
            return self._json(h, status, status_object(status, "InternalError", "scripted"))
        if watch:
            return self._watch(h, kind, query)
        return self._list(h, kind, query)

    def _take_failure(self, kind, verb):
        with self.cond:
            fs = self.res[kind].failures
            for i, f in enumerate(fs):
                if f[0] == verb:
                    return fs.pop(i)
        return None

    def _sleep(self, seconds):
        end = time.monotonic() + seconds
        with self.cond:
            while not self.closing and time.monotonic() < end:
                self.cond.wait(end - time.monotonic())

    @staticmethod
    def _selected(obj, query):
        sel = query.get("fieldSelector")
        if not sel:
            return True
        field, _, value = sel.partition("=")
        assert field == "spec.nodeName", f"unsupported field selector {sel}"
        return obj.get("spec", {}).get("nodeName") == value

    def _list(self, h, kind, query):
        with self.cond:
            r = self.res[kind]
            r.lists += 1
            items = [o for o in r.objects.values() if self._selected(o, query)]
            body = {"kind": r.list_kind, "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(self.rv)}, "items": items}
        self._json(h, 200, body)

    def _watch(self, h, kind, query):
        r = self.res[kind]
        since = int(query.get("resourceVersion") or self.rv)
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 30)
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        with self.cond:
            r.watches += 1
            epoch, expiries = self.epoch, r.expiries
        try:
            self._stream(h, r, query, since, deadline, (epoch, expiries))
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        h.close_connection = True

    def _stream(self, h, r, query, since, deadline, epochs):
        epoch, expiries = epochs
        while True:
            with self.cond:
                if since < r.compacted or r.expiries != expiries:
                    gone = status_object(410, "Expired", f"too old resource version: {since} "
                                                         f"({r.compacted})")
                    self._chunk(h, {"type": "ERROR", "object": gone})
                    return
                pending = [e for e in r.log if e[0] > since]
                if not pending:
                    left = deadline - time.monotonic()
                    if left <= 0 or self.closing or self.epoch != epoch:
                        return
                    self.cond.wait(min(left, 0.2))
                    continue
            for rv, etype, obj in pending:
                since = rv
                if etype in ("BOOKMARK",) and query.get("allowWatchBookmarks") != "true":
                    continue
                if etype not in ("BOOKMARK",) and isinstance(obj, dict) and \
                        isinstance(obj.get("spec"), dict) and not self._selected(obj, query):
                    continue
                self._chunk(h, {"type": etype, "object": obj})

    @staticmethod
    def _chunk(h, event):
        data = (json.dumps(event) + "\n").encode()
        h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        h.wfile.flush()

    @staticmethod
    def _json(h, status, body):
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    @staticmethod
    def _close(h):
        h.close_connection = True
