"""Enrollment against a scripted API server (the official client talks to it over
HTTP) and a kubelet-like cgroup tree: the enrolled map after each event."""

import json
import logging

import pytest

from .conftest import (NODE, FakeControl, KubeletTree, fast_settings, namespace, pod, running,
                       wait_until)

ON = {"nodemesh.io/enabled": "true"}
OFF = {"nodemesh.io/enabled": "false"}
AMBIENT = {"istio.io/dataplane-mode": "ambient"}


@pytest.fixture(params=["systemd", "cgroupfs"])
def tree(request, tmp_path):
    return KubeletTree(tmp_path / "cgroup", request.param)


@pytest.fixture
def control():
    return FakeControl()


def seed(api, tree, *objs):
    for o in objs:
        kind = "pods" if o["kind"] == "Pod" else "namespaces"
        api.put(kind, o)
        if kind == "pods":
            tree.add(o)


def enrolled_names(control, tree, pods):
    by_path = {str(tree.path(p)): p["metadata"]["name"] for p in pods}
    return {by_path.get(path, path) for path in control.paths()}


def test_first_list_enrolls_by_label_and_precedence(api, tree, control, tmp_path):
    pods = [
        pod("by-ns", "shop"),
        pod("opt-out", "shop", labels=OFF),
        pod("by-pod", "plain", labels=ON),
        pod("plain", "plain"),
        pod("ambient-ns", "mesh"),
        pod("pod-beats-ns", "mesh", labels=OFF),
        pod("guaranteed", "shop", qos="Guaranteed"),
        pod("besteffort", "shop", qos="BestEffort"),
        pod("hostnet", "shop", host_network=True),
        pod("sidecar", "shop", containers=("app", "istio-proxy")),
        pod("system", "kube-system", labels=ON),
        pod("elsewhere", "shop", node="node-b"),
    ]
    seed(api, tree, namespace("shop", ON), namespace("plain"), namespace("mesh", AMBIENT),
         namespace("kube-system"), *pods)
    with running(api, control, tree.root, fast_settings(tmp_path)):
        want = {"by-ns", "by-pod", "ambient-ns", "guaranteed", "besteffort"}
        wait_until(lambda: enrolled_names(control, tree, pods) == want, f"enrolled == {want}")
    pod_requests = [q for path, q in api.requests if path == "/api/v1/pods"]
    assert all(q["fieldSelector"] == f"spec.nodeName={NODE}" for q in pod_requests)
    watches = [q for q in pod_requests if q.get("watch") == "true"]
    assert watches and watches[0]["allowWatchBookmarks"] == "true"
    assert int(watches[0]["resourceVersion"]) >= 100


def test_watch_events_add_relabel_delete(api, tree, control, tmp_path):
    a = pod("a", "shop")
    seed(api, tree, namespace("shop", ON), namespace("plain"), a)
    with running(api, control, tree.root, fast_settings(tmp_path)):
        wait_until(lambda: control.paths() == {str(tree.path(a))}, "a enrolled")
        b = pod("b", "plain", labels=ON)
        tree.add(b)
        api.put("pods", b)                                   # ADDED
        wait_until(lambda: str(tree.path(b)) in control.paths(), "b enrolled on ADDED")
        b["metadata"]["labels"] = OFF
        api.put("pods", b)                                   # MODIFIED: opted out
        wait_until(lambda: str(tree.path(b)) not in control.paths(), "b unenrolled on relabel")
        b["metadata"]["labels"] = ON
        api.put("pods", b)
        wait_until(lambda: str(tree.path(b)) in control.paths(), "b enrolled again")
        api.delete("pods", a)                                # DELETED
        wait_until(lambda: control.paths() == {str(tree.path(b))}, "a unenrolled on delete")
        c, d = pod("c", "plain"), pod("d", "plain", labels=AMBIENT)
        for p in (c, d):
            tree.add(p)
            api.put("pods", p)
        # events arrive in order: once d is in, c has been seen and left out
        wait_until(lambda: str(tree.path(d)) in control.paths(), "d enrolled by Istio's label")
        assert control.paths() == {str(tree.path(b)), str(tree.path(d))}
    assert api.count("pods", "list") == 1


def test_namespace_relabel_moves_its_pods(api, tree, control, tmp_path):
    p1, p2 = pod("p1", "shop"), pod("p2", "shop")
    seed(api, tree, namespace("shop"), p1, p2)
    with running(api, control, tree.root, fast_settings(tmp_path)):
        wait_until(lambda: api.count("namespaces", "watch") >= 1, "namespace watch open")
        api.put("namespaces", namespace("shop", AMBIENT))
        wait_until(lambda: len(control.paths()) == 2, "both pods enrolled by the namespace")
        api.put("namespaces", namespace("shop", {}))
        wait_until(lambda: not control.paths(), "both pods unenrolled when the label goes")


def test_deleted_cgroup_is_removed_by_id(api, tree, control, tmp_path):
    a = pod("a", "shop")
    seed(api, tree, namespace("shop", ON), a)
    with running(api, control, tree.root, fast_settings(tmp_path)):
        wait_until(lambda: len(control.paths()) == 1, "a enrolled")
        tree.remove(a)                   # the kubelet removed the cgroup first
        api.delete("pods", a)
        wait_until(lambda: not control.paths(), "entry removed without its directory")
    assert control.calls[-1][0] == "unenroll_id"


def test_bookmark_moves_resume_point_without_relist(api, tree, control, tmp_path):
    a = pod("a", "shop")
    seed(api, tree, namespace("shop", ON), a)
    with running(api, control, tree.root, fast_settings(tmp_path, watch_timeout=1)):
        wait_until(lambda: api.count("pods", "watch") >= 1, "pods watch open")
        api.bookmark("pods")
        mark = api.rv
        # the server ends each watch after 1 s: the next one resumes at the bookmark
        wait_until(lambda: any(q.get("resourceVersion") == str(mark)
                               for p, q in api.requests if p == "/api/v1/pods"),
                   "a watch resumed from the bookmark's resourceVersion")
        assert api.count("pods", "list") == 1
        assert control.paths() == {str(tree.path(a))}


def test_410_gone_relists_and_reconciles(api, tree, control, tmp_path):
    keep, lost, new = pod("keep", "shop"), pod("lost", "shop"), pod("new", "shop")
    seed(api, tree, namespace("shop", ON), keep, lost)
    with running(api, control, tree.root, fast_settings(tmp_path)):
        wait_until(lambda: len(control.paths()) == 2, "keep and lost enrolled")
        wait_until(lambda: api.count("pods", "watch") >= 1, "pods watch open")
        # changes the watch never delivers, then the window moves past them
        api.delete("pods", lost, deliver=False)
        tree.add(new)
        api.put("pods", new, deliver=False)
        api.expire("pods")
        want = {str(tree.path(keep)), str(tree.path(new))}
        wait_until(lambda: control.paths() == want, "relist: lost unenrolled, new enrolled")
        assert api.count("pods", "list") == 2
    # keep was never touched again
    assert [c for c in control.calls if str(tree.path(keep)) in str(c)] == \
        [("enroll", str(tree.path(keep)))]


def test_missing_cgroup_is_retried_and_named(api, tree, control, tmp_path, caplog):
    late = pod("late", "shop")
    api.put("namespaces", namespace("shop", ON))
    api.put("pods", late)                     # no cgroup directory yet
    caplog.set_level(logging.INFO, logger="nodemesh.k8s")
    with running(api, control, tree.root, fast_settings(tmp_path)) as enroller:
        wait_until(lambda: "shop/late" in caplog.text and "no cgroup yet" in caplog.text,
                   "a log naming the pod and the missing cgroup")
        assert str(tree.path(late)) in caplog.text
        assert not control.paths()
        assert "shop/late" in " ".join(enroller.status()["pending"])
        tree.add(late)
        wait_until(lambda: control.paths() == {str(tree.path(late))}, "enrolled on a retry")
        assert enroller.status()["pending"] == {}


def test_unknown_qos_searches_every_class(api, tree, control, tmp_path):
    p = pod("noqos", "shop", qos="BestEffort")
    tree.add(p)
    del p["status"]["qosClass"]               # the API has not filled it in yet
    seed(api, tree, namespace("shop", ON))
    api.put("pods", p)
    with running(api, control, tree.root, fast_settings(tmp_path)):
        wait_until(lambda: len(control.paths()) == 1, "found under besteffort")


def test_malformed_labels_and_objects(api, tree, control, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="nodemesh.k8s")
    fallback = pod("fallback", "shop", labels={"nodemesh.io/enabled": "yes"})
    alone = pod("alone", "plain", labels={"nodemesh.io/enabled": "TRUE"})
    seed(api, tree, namespace("shop", ON), namespace("plain"), fallback, alone)
    with running(api, control, tree.root, fast_settings(tmp_path)):
        # a malformed pod label is skipped: the namespace decides for fallback
        wait_until(lambda: control.paths() == {str(tree.path(fallback))}, "fallback enrolled")
        wait_until(lambda: "shop/fallback" in caplog.text and "'yes'" in caplog.text,
                   "warning naming pod and label")
        assert "plain/alone" in caplog.text
        # an unreadable update of an enrolled pod leaves it enrolled
        broken = json.loads(json.dumps(fallback))
        broken["metadata"]["labels"] = ["not", "a", "map"]
        api.send_raw("pods", "MODIFIED", broken)
        api.send_raw("pods", "DELETED", {"metadata": {"name": "no-uid"}})
        wait_until(lambda: "metadata.labels: expected dict" in caplog.text, "error logged")
        wait_until(lambda: "without metadata.uid" in caplog.text, "error logged")
        assert control.paths() == {str(tree.path(fallback))}


def test_api_errors_back_off_and_never_unenroll(api, tree, control, tmp_path, caplog):
    a = pod("a", "shop")
    seed(api, tree, namespace("shop", ON), a)
    api.fail("pods", "list", 500, times=3)
    caplog.set_level(logging.INFO, logger="nodemesh.k8s")
    with running(api, control, tree.root, fast_settings(tmp_path)):
        wait_until(lambda: control.paths() == {str(tree.path(a))}, "enrolled after 500s")
        assert api.count("pods", "list") == 1      # the three failures were not counted
        assert caplog.text.count("listing again") >= 3
        # the watch breaks; relists fail with 500 and a timeout: a stays enrolled
        api.fail("pods", "watch", 500, times=2)
        api.fail("pods", "list", 503, times=2)
        api.fail("pods", "list", "hang", seconds=3)
        api.expire("pods")
        wait_until(lambda: "TimeoutError" in caplog.text or "timed out" in caplog.text.lower(),
                   "the hung list timed out")
        assert control.paths() == {str(tree.path(a))}
        wait_until(lambda: api.count("pods", "list") == 2, "listed again once the API is back")
        assert control.paths() == {str(tree.path(a))}
        assert ("unenroll", str(tree.path(a))) not in control.calls


def test_map_write_failure_is_retried(api, tree, control, tmp_path, caplog):
    a = pod("a", "shop")
    seed(api, tree, namespace("shop", ON), a)
    control.fail_next = 2
    caplog.set_level(logging.INFO, logger="nodemesh.k8s")
    with running(api, control, tree.root, fast_settings(tmp_path)):
        wait_until(lambda: control.paths() == {str(tree.path(a))}, "enrolled on the third try")
    assert "enrolled map write failed" in caplog.text and "shop/a" in caplog.text


def test_lost_map_entry_is_put_back(api, tree, control, tmp_path):
    a = pod("a", "shop")
    seed(api, tree, namespace("shop", ON), a)
    with running(api, control, tree.root, fast_settings(tmp_path)):
        wait_until(lambda: len(control.paths()) == 1, "a enrolled")
        control.entries.clear()                    # e.g. the datapath was reinstalled
        wait_until(lambda: len(control.paths()) == 1, "a enrolled again by the resync")


def test_pods_view_and_file(api, tree, control, tmp_path):
    a = pod("a", "shop")
    seed(api, tree, namespace("shop", ON), a)
    settings = fast_settings(tmp_path)
    with running(api, control, tree.root, settings) as enroller:
        wait_until(lambda: len(enroller.pods()) == 1, "pods() lists a")
        [(cid, entry)] = enroller.pods().items()
        assert entry["namespace"] == "shop" and entry["name"] == "a"
        assert entry["uid"] == a["metadata"]["uid"] and entry["cgroup"] == str(tree.path(a))
        assert "namespace label nodemesh.io/enabled=true" == entry["reason"]
    doc = json.loads(open(settings.pods_file).read())
    assert doc["node"] == NODE and doc["version"] == 1
    assert [p["cgroup_id"] for p in doc["pods"]] == [cid]


def test_restart_adopts_and_removes_what_died_meanwhile(api, tree, control, tmp_path):
    stays, dies = pod("stays", "shop"), pod("dies", "shop")
    seed(api, tree, namespace("shop", ON), stays, dies)
    settings = fast_settings(tmp_path)
    with running(api, control, tree.root, settings):
        wait_until(lambda: len(control.paths()) == 2, "both enrolled")
    api.delete("pods", dies)                        # while no agent runs
    tree.remove(dies)
    calls_before = len(control.calls)
    with running(api, control, tree.root, settings) as enroller:
        wait_until(lambda: control.paths() == {str(tree.path(stays))}, "dead entry removed")
        wait_until(lambda: len(enroller.pods()) == 1, "view holds the adopted pod")
    # the pod that stayed was adopted, not enrolled again
    assert control.calls[calls_before:] == [("unenroll_id", control.calls[calls_before][1])]


def test_unknown_namespace_leaves_pods_alone(api, tree, control, tmp_path):
    a = pod("a", "shop")
    seed(api, tree, namespace("shop", ON), a)
    api.fail("namespaces", "list", 500, times=1000)
    with running(api, control, tree.root, fast_settings(tmp_path)) as enroller:
        wait_until(lambda: api.count("pods", "list") == 1, "pods listed")
        wait_until(lambda: "namespaces" in enroller.status()["errors"], "namespace errors seen")
        assert not control.paths()                  # undecided: no namespace labels yet
        labelled = pod("labelled", "shop", labels=ON)
        tree.add(labelled)
        api.put("pods", labelled)                   # a pod label decides on its own
        wait_until(lambda: control.paths() == {str(tree.path(labelled))}, "pod label enrolls")
        api.res["namespaces"].failures.clear()
        wait_until(lambda: len(control.paths()) == 2, "namespace known: a enrolled")
