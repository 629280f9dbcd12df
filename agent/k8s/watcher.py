"""List, then watch from the list's resourceVersion, forever; relist when needed.

One ResourceWatch runs in its own thread (the kubernetes client is
synchronous) and hands what it sees to a sink:

  sink(kind, "SYNC", [raw objects])          after every successful list
  sink(kind, "ADDED"|"MODIFIED"|"DELETED", raw object)

Bookmarks (allowWatchBookmarks) only move the resourceVersion, so a watch
that ends by timeout resumes where it was without a relist. A 410 Gone
(the version fell out of the server's window) relists at once; any other
failure (HTTP errors, timeouts, a dropped connection, a body that is not
JSON) relists after a back-off with jitter. Nothing here raises: the
thread ends only when stop() is called.
"""

import json
import logging
import threading

from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from .backoff import Backoff

log = logging.getLogger("nodemesh.k8s")
GONE = 410


class WatchFailed(Exception):
    """A list or watch failed in a way worth a back-off (message says how)."""


class ResourceWatch:
    def __init__(self, kind, list_fn, sink, stop_event, settings, **selectors):
        self.kind = kind                  # 'pods', 'namespaces': names it in logs
        self.list_fn = list_fn            # a CoreV1Api list_* method
        self.sink = sink
        self.stop_event = stop_event
        self.s = settings
        self.selectors = selectors        # field_selector=..., label_selector=...
        self.resource_version = None
        self.lists = 0                    # successful lists, for status and tests
        self.last_error = None
        self._watch = None
        self._lock = threading.Lock()

    # -- the thread ---------------------------------------------------------

    def run(self):
        backoff = Backoff(self.s.api_backoff_base, self.s.api_backoff_cap)
        while not self.stop_event.is_set():
            try:
                self._list()
                if self._watch_until_expired():
                    backoff.reset()       # a 410 after a healthy watch: relist now
                    continue
                self.last_error = "watch expired (410 Gone) straight after a list"
            except ApiException as exc:
                self.last_error = f"API error {exc.status} ({exc.reason})"
            except WatchFailed as exc:
                self.last_error = str(exc)
            except Exception as exc:     # noqa: BLE001 - connection errors, timeouts
                self.last_error = f"{type(exc).__name__}: {exc}"
            if self.stop_event.is_set():
                break
            delay = backoff.next_delay()
            log.warning("%s: %s; listing again in %.1f s", self.kind, self.last_error, delay,
                        extra={"resource": self.kind, "retry_in": round(delay, 2)})
            self.stop_event.wait(delay)

    def stop(self):
        with self._lock:
            w = self._watch
        if w is not None:
            w.stop()              # shuts the socket: unblocks a read in progress

    # -- list ---------------------------------------------------------------

    def _list(self):
        resp = self.list_fn(_preload_content=False, _request_timeout=self.s.request_timeout,
                            **self.selectors)
        try:
            status, body = getattr(resp, "status", 200), resp.data
        finally:
            resp.release_conn()
        if not 200 <= status <= 299:
            raise WatchFailed(f"list failed: HTTP {status}")
        try:
            doc = json.loads(body)
            items = doc.get("items") or []
            version = doc["metadata"]["resourceVersion"]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise WatchFailed("list answer is not a Kubernetes list "
                              "(no metadata.resourceVersion)") from None
        if not isinstance(items, list):
            raise WatchFailed("list answer: items is not a list")
        self.resource_version = version
        self.sink(self.kind, "SYNC", items)
        self.lists += 1
        self.last_error = None

    # -- watch --------------------------------------------------------------

    def _watch_until_expired(self) -> bool:
        """Watch, resuming after each server-side timeout, until 410 Gone (or stop).

        True if the watch made progress (an event, or a watch that ran its
        course) before it expired: then relisting at once is right.
        """
        progress = False
        while not self.stop_event.is_set():
            w = k8s_watch.Watch(return_type="object")   # raw dicts, no model parsing
            with self._lock:
                self._watch = w
            try:
                for event in w.stream(self.list_fn, resource_version=self.resource_version,
                                      allow_watch_bookmarks=True,
                                      timeout_seconds=self.s.watch_timeout,
                                      _request_timeout=(self.s.request_timeout,
                                                        self.s.watch_timeout + 30),
                                      **self.selectors):
                    self._event(event, w)
                    progress = True
                    if self.stop_event.is_set():
                        return True
            except ApiException as exc:
                if exc.status != GONE:
                    raise
                log.info("%s: watch expired (410 Gone at resourceVersion %s); relisting",
                         self.kind, self.resource_version, extra={"resource": self.kind})
                return progress
            finally:
                with self._lock:
                    self._watch = None
            progress = True
            if w.resource_version:
                self.resource_version = w.resource_version
        return True

    def _event(self, event, w):
        if event is None:         # a blank keep-alive line (or one the client could not parse)
            return
        kind = event.get("type") if isinstance(event, dict) else None
        if kind not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
            raise WatchFailed(f"watch sent an event of unknown type {kind!r}")
        if w.resource_version:
            self.resource_version = w.resource_version
        if kind != "BOOKMARK":
            self.sink(self.kind, kind, event.get("raw_object"))
