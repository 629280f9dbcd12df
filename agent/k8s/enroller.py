"""Pod enrollment: this node's pods, their labels, their cgroups, the enrolled map.

Two watches (this node's pods by field selector, and namespaces) feed one
queue; one thread -- the one that calls run() -- applies what they saw, so
the state below has a single writer. The rules it keeps:

- enroll a pod when policy.decide() says so and its cgroup directory exists
  (even before phase Running: the app's first connections must be steered);
  a missing cgroup or a failed map write is retried with back-off and logged
  with the pod named;
- unenroll only what is known: a DELETED event, a terminal phase, a label or
  namespace change that excludes it, or its absence from a complete list of
  the node's pods. An API error, an unreadable object, an unseen namespace or
  a missing cgroup never unenrolls anything;
- after a restart, entries recorded in pods.json are adopted, and removed
  only once a complete list shows their pod gone.
"""

import dataclasses
import logging
import queue
import threading
import time

from kubernetes import client as k8s_client

from . import podsfile
from .backoff import Backoff
from .cgroups import resolve_pod_cgroup
from .enrolled import EnrolledMap
from .objects import ObjectError, describe, parse_namespace, parse_pod
from .policy import Verdict, decide, parse_rules
from .settings import EnrollerSettings
from .watcher import ResourceWatch

log = logging.getLogger("nodemesh.k8s")


@dataclasses.dataclass
class Enrollment:
    cgroup_id: int
    cgroup: str
    namespace: str
    name: str
    uid: str
    reason: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Retry:
    backoff: Backoff
    due: float
    reason: str
    unenroll: Enrollment = None   # set when what failed was a removal


class Enroller:
    def __init__(self, api_client, node_name: str, control, cgroup_root: str, labels=None,
                 settings: EnrollerSettings = None):
        if not node_name:
            raise ValueError("node_name is empty: set NODE_NAME from spec.nodeName")
        self.node = node_name
        self.core = k8s_client.CoreV1Api(api_client)
        self.map = EnrolledMap(control)
        self.cgroup_root = cgroup_root
        self.rules = parse_rules(labels)
        self.s = settings or EnrollerSettings()
        self.pods_path = (podsfile.default_path() if self.s.pods_file is None
                          else self.s.pods_file)
        self._events = queue.Queue()
        self._pods = {}            # uid -> PodInfo, this node's pods as last seen
        self._namespaces = None    # name -> NamespaceInfo; None until the first list
        self._enrolled = {}        # uid -> Enrollment
        self._retry = {}           # uid -> Retry
        self._warned = set()       # (uid, problem) already logged
        self._adopted = podsfile.read(self.pods_path) if self.pods_path else {}
        self._view = {}            # cgroup id -> pod dict, for pods()
        self._view_lock = threading.Lock()
        self._dirty = True
        self.watches = []

    # -- public ---------------------------------------------------------------

    def run(self, stop_event: threading.Event):
        """Watch and enroll until stop_event is set. Never raises."""
        self.watches = [
            ResourceWatch("pods", self.core.list_pod_for_all_namespaces, self._sink, stop_event,
                          self.s, field_selector=f"spec.nodeName={self.node}"),
            ResourceWatch("namespaces", self.core.list_namespace, self._sink, stop_event, self.s),
        ]
        threads = [threading.Thread(target=w.run, name=f"nodemesh-watch-{w.kind}", daemon=True)
                   for w in self.watches]
        for t in threads:
            t.start()
        next_resync = time.monotonic() + self.s.resync_interval
        try:
            while not stop_event.is_set():
                self._drain_queue(timeout=self._idle_timeout(next_resync))
                self._run_due_retries()
                if time.monotonic() >= next_resync:
                    self._resync_map()
                    next_resync = time.monotonic() + self.s.resync_interval
                self._publish()
        finally:
            for w in self.watches:
                w.stop()
            for t in threads:
                t.join(timeout=5)
            self._publish()

    def pods(self) -> dict:
        """cgroup id -> {namespace, name, uid, cgroup, reason} of what we enrolled."""
        with self._view_lock:
            return {k: dict(v) for k, v in self._view.items()}

    def status(self) -> dict:
        """For the admin API: are we in sync, what is enrolled, what waits."""
        pods, retry = dict(self._pods), dict(self._retry)   # copies: run() writes them
        return {
            "node": self.node,
            "synced": {w.kind: w.lists > 0 for w in self.watches},
            "errors": {w.kind: w.last_error for w in self.watches if w.last_error},
            "enrolled": len(self._enrolled),
            "pending": {pods[u].ref if u in pods else u: r.reason for u, r in retry.items()},
        }

    # -- events -----------------------------------------------------------------

    def _sink(self, kind, event, payload):
        self._events.put((kind, event, payload))

    def _idle_timeout(self, next_resync) -> float:
        due = [r.due for r in self._retry.values()] + [next_resync]
        return max(0.0, min(0.5, min(due) - time.monotonic()))

    def _drain_queue(self, timeout):
        try:
            item = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        while item is not None:
            try:
                self._apply(*item)
            except Exception:   # noqa: BLE001 - one bad event must not stop enrollment
                log.exception("enrollment: could not apply %s %s", item[0], item[1])
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                item = None

    def _apply(self, kind, event, payload):
        if kind == "namespaces":
            self._apply_namespace(event, payload)
        elif event == "SYNC":
            self._sync_pods(payload)
        elif event == "DELETED":
            self._pod_deleted(payload)
        else:
            self._pod_changed(payload)

    def _apply_namespace(self, event, payload):
        if event == "SYNC":
            seen = {}
            for obj in payload:
                try:
                    ns = parse_namespace(obj)
                    seen[ns.name] = ns
                except ObjectError as exc:
                    log.error("namespace %s: %s; ignored", describe(obj), exc)
            self._namespaces = seen
            affected = list(self._pods)
        else:
            try:
                ns = parse_namespace(payload)
            except ObjectError as exc:
                log.error("namespace %s: %s; ignored", describe(payload), exc)
                return
            if self._namespaces is None:
                self._namespaces = {}
            if event == "DELETED":
                self._namespaces.pop(ns.name, None)
            else:
                self._namespaces[ns.name] = ns
            affected = [u for u, p in self._pods.items() if p.namespace == ns.name]
        for uid in affected:
            self._evaluate(uid)

    def _sync_pods(self, items):
        """A complete list of this node's pods: the one authority for deletions."""
        pods, unreadable = {}, 0
        for obj in items:
            try:
                pod = parse_pod(obj)
                pods[pod.uid] = pod
            except ObjectError as exc:
                unreadable += 1
                log.error("pod %s: %s; its enrollment is left as it is", describe(obj), exc)
                uid = (obj.get("metadata") or {}).get("uid") if isinstance(obj, dict) else None
                if isinstance(uid, str) and uid in self._pods:
                    pods[uid] = self._pods[uid]     # keep what we knew
                    unreadable -= 1
        self._pods = {u: p for u, p in pods.items() if p.node in ("", self.node)}
        if unreadable:   # one of them may be a pod we enrolled: remove nothing on absence
            log.warning("pods: %d unreadable in the list; no pod is unenrolled for being "
                        "absent from it", unreadable)
        else:
            self._remove_absent()
        self._adopt()
        for uid in list(self._pods):
            self._evaluate(uid)

    def _remove_absent(self):
        for uid in [u for u in self._enrolled if u not in self._pods]:
            self._unenroll(uid, "not on this node any more (absent from a complete list)")
        for uid in [u for u, r in self._retry.items() if u not in self._pods and not r.unenroll]:
            del self._retry[uid]
        for cid, pod in list(self._adopted.items()):
            if pod.get("uid") not in self._pods:
                e = Enrollment(cid, pod.get("cgroup", ""), pod.get("namespace", "?"),
                               pod.get("name", "?"), pod.get("uid", "?"), "adopted")
                self._enrolled[e.uid] = e
                self._unenroll(e.uid, "deleted while the agent was away")
                del self._adopted[cid]

    def _adopt(self):
        """Entries we made before a restart whose pods are still listed."""
        for cid, pod in list(self._adopted.items()):
            uid = pod.get("uid")
            if uid in self._pods and uid not in self._enrolled:
                self._enrolled[uid] = Enrollment(cid, pod.get("cgroup", ""),
                                                 pod.get("namespace", "?"), pod.get("name", "?"),
                                                 uid, pod.get("reason", "adopted"))
                self._dirty = True
                del self._adopted[cid]

    def _pod_changed(self, obj):
        try:
            pod = parse_pod(obj)
        except ObjectError as exc:
            log.error("pod %s: %s; its enrollment is left as it is", describe(obj), exc)
            return
        if pod.node not in ("", self.node):
            return
        self._pods[pod.uid] = pod
        if pod.uid in self._retry and not self._retry[pod.uid].unenroll:
            self._retry[pod.uid].due = 0.0     # news about it: try again now
        self._evaluate(pod.uid)

    def _pod_deleted(self, obj):
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        uid = meta.get("uid") if isinstance(meta, dict) else None
        if not isinstance(uid, str):
            log.error("pod %s: DELETED event without metadata.uid; ignored", describe(obj))
            return
        self._pods.pop(uid, None)
        if uid in self._retry and not self._retry[uid].unenroll:
            del self._retry[uid]
        if uid in self._enrolled:
            self._unenroll(uid, "pod deleted")

    # -- decisions ----------------------------------------------------------------

    def _evaluate(self, uid):
        pod = self._pods.get(uid)
        if pod is None:
            return
        ns = None if self._namespaces is None else self._namespaces.get(pod.namespace)
        d = decide(pod, ns, self.rules, self.s.excluded_namespaces)
        for problem in d.problems:
            if (uid, problem) not in self._warned:
                self._warned.add((uid, problem))
                log.warning("pod %s: %s; that label is ignored", pod.ref, problem,
                            extra={"pod": pod.ref})
        if d.verdict is Verdict.UNDECIDED:
            return
        if d.verdict is Verdict.ENROLL:
            if uid not in self._enrolled:
                self._enroll(pod, d.reason)
            return
        if uid in self._retry and not self._retry[uid].unenroll:
            del self._retry[uid]
        if uid in self._enrolled:
            self._unenroll(uid, d.reason)

    def _enroll(self, pod, reason):
        path, searched = resolve_pod_cgroup(self.cgroup_root, pod.uid, pod.qos,
                                            self.s.cgroup_driver, self.s.kubelet_cgroup_root)
        if path is None:
            self._schedule(pod.uid, f"no cgroup yet (looked in {', '.join(searched)})", pod.ref)
            return
        try:
            cid = self.map.enroll(path)
        except Exception as exc:   # noqa: BLE001 - datapath down, map full: retry
            self._schedule(pod.uid, f"enrolled map write failed: {exc}", pod.ref, warn=True)
            return
        self._retry.pop(pod.uid, None)
        self._enrolled[pod.uid] = Enrollment(cid, path, pod.namespace, pod.name, pod.uid, reason)
        self._dirty = True
        log.info("enrolled pod %s: cgroup %s (id %d), %s", pod.ref, path, cid, reason,
                 extra={"pod": pod.ref, "cgroup_id": cid})

    def _unenroll(self, uid, why):
        e = self._enrolled[uid]
        ref = f"{e.namespace}/{e.name} (uid {uid})"
        try:
            found = self.map.unenroll(e.cgroup_id, e.cgroup)
        except Exception as exc:   # noqa: BLE001 - keep it and retry the removal
            r = self._schedule(uid, f"unenroll failed: {exc}", ref, warn=True)
            r.unenroll = e
            return
        del self._enrolled[uid]
        if uid in self._retry and self._retry[uid].unenroll:
            del self._retry[uid]
        self._dirty = True
        log.info("unenrolled pod %s (cgroup id %d): %s%s", ref, e.cgroup_id, why,
                 "" if found else "; it was not in the map", extra={"pod": ref})

    # -- retries and resync ---------------------------------------------------------

    def _schedule(self, uid, reason, ref, warn=False) -> Retry:
        r = self._retry.get(uid)
        if r is None:
            r = self._retry[uid] = Retry(Backoff(self.s.retry_base, self.s.retry_cap), 0.0, "")
        delay = r.backoff.next_delay()
        r.due, r.reason = time.monotonic() + delay, reason
        level = logging.WARNING if warn or r.backoff.attempts >= self.s.warn_after else logging.INFO
        log.log(level, "pod %s: %s; retry %d in %.1f s", ref, reason, r.backoff.attempts, delay,
                extra={"pod": ref, "retry_in": round(delay, 2)})
        return r

    def _run_due_retries(self):
        now = time.monotonic()
        for uid, r in list(self._retry.items()):
            if r.due > now or self._retry.get(uid) is not r:
                continue
            if r.unenroll is not None:
                self._enrolled.setdefault(uid, r.unenroll)
                self._unenroll(uid, "retrying the removal")
            else:
                self._evaluate(uid)

    def _resync_map(self):
        """Put back entries that left the map without us (a datapath reinstall)."""
        try:
            present = self.map.ids()
        except Exception as exc:   # noqa: BLE001 - datapath not up: nothing to compare
            log.warning("enrolled map unreadable (%s); compared again in %.0f s", exc,
                        self.s.resync_interval)
            return
        for uid, e in list(self._enrolled.items()):
            if e.cgroup_id not in present and uid in self._pods:
                log.warning("pod %s/%s: its entry left the enrolled map; enrolling again",
                            e.namespace, e.name)
                del self._enrolled[uid]
                self._dirty = True
                self._evaluate(uid)

    def _publish(self):
        if not self._dirty:
            return
        view = {e.cgroup_id: e.as_dict() for e in self._enrolled.values()}
        view.update({cid: pod for cid, pod in self._adopted.items()})
        with self._view_lock:
            self._view = view
        self._dirty = False
        if self.pods_path:
            try:
                podsfile.write(self.pods_path, self.node, list(view.values()))
            except OSError as exc:
                self._dirty = True
                log.warning("could not write %s: %s", self.pods_path, exc)
