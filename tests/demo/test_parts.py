"""The demo's parts that need no root: its xDS resources (compiled by the real config
engine and served by the real xds-serve file loader), the live view's width, the
verdict, the undo order."""

import pytest
import yaml

from agent.config import resources as config_resources
from agent.config.compile import compile_resource
from agent.demo import display, resources
from agent.demo.scenario import judge
from agent.demo.settings import PODS, PROTOCOLS, DemoSettings
from agent.demo.undo import Undo


def services():
    s = DemoSettings()
    backends = {"redis": {"redis": ("198.18.224.6", 6379)},
                "thrift": {"thrift": ("198.18.224.10", 9090)},
                "dubbo": {"dubbo": ("198.18.224.14", 20880)},
                "http1": {"http-v1": ("198.18.224.18", 8080),
                          "http-v2": ("198.18.224.22", 8080)}}
    return [resources.Service(p, s.vips[i], s.service_ports[i], s.remote_ports[i], backends[p])
            for i, p in enumerate(PROTOCOLS)]


def compiled(tmp_path, weights=(100, 0)):
    resources.write_all(str(tmp_path), services(), weights)
    out = {}
    for path in sorted(tmp_path.iterdir()):
        for doc in yaml.safe_load_all(path.read_text()):
            type_url = doc.pop("@type")
            out[doc["name"]] = compile_resource(type_url, config_resources.decode(type_url, doc),
                                                "1")
    return out


def test_resources_compile_to_one_listener_per_vip_with_its_remote_port(tmp_path):
    got = compiled(tmp_path)
    s = DemoSettings()
    listeners = {n: l for n, l in got.items() if n.endswith("-svc")}
    assert {(l.address, l.port, l.remote_port, l.filter_chains[0].codec)
            for l in listeners.values()} == {
        (s.vips[i], s.service_ports[i], s.remote_ports[i], p) for i, p in enumerate(PROTOCOLS)}
    assert listeners["http1-svc"].filter_chains[0].route_config_name == resources.HTTP_ROUTES
    assert {n for n in got if not n.endswith("-svc")} == {
        "redis", "thrift", "dubbo", "http-v1", "http-v2", resources.HTTP_ROUTES}
    assert not list(tmp_path.glob(".*"))         # no temporary file left for xds-serve


@pytest.mark.parametrize("weights", [(100, 0), (50, 50), (0, 100)])
def test_http_split_is_the_route_weights(tmp_path, weights):
    route = compiled(tmp_path, weights)[resources.HTTP_ROUTES].routes[0]
    assert [(c.name, c.weight) for c in route.clusters] == list(zip(resources.HTTP_CLUSTERS,
                                                                    weights))


@pytest.mark.parametrize("weights", [(0, 0), (-1, 101), (100,)])
def test_bad_split_is_refused(weights):
    with pytest.raises(ValueError, match="http split"):
        resources.http_routes(weights)


def test_xds_serve_loads_the_files(tmp_path):
    from agent.xds.files import ResourceDir

    resources.write_all(str(tmp_path), services(), (100, 0))
    src = ResourceDir(str(tmp_path))
    assert src.reload() and src.errors == {}
    counts = {t.rsplit(".", 1)[-1]: n for t, n in src.served.counts().items()}
    assert counts == {"Listener": 4, "Cluster": 5, "RouteConfiguration": 1}, counts
    resources.write_http_split(str(tmp_path), (50, 50))     # same size, new content
    assert src.reload()                                     # a change to push


def test_live_line_fits_80_columns_even_when_busy():
    second = {(p, pod): {"ok": 12345, "failed": 99, "retried": 99,
                         "by_backend": {"http-v1": 3, "http-v2": 1} if p == "http1" else {}}
              for p in PROTOCOLS for pod in PODS}
    paths = {"requests": {"local": 123456, "remote": 99999}, "conns": {"local": 999, "remote": 999}}
    assert len(display.header()) <= display.WIDTH
    line = display.line(9999, "5 drain+upgrade", second, paths, PODS)
    assert len(line) <= display.WIDTH
    quiet = display.line(3, "1 steady", {("redis", "pod-a"): {"ok": 20}},
                         {"requests": {"local": 20, "remote": 0},
                          "conns": {"local": 1, "remote": 0}}, PODS)
    assert quiet.split()[3] == "20/-" and quiet.endswith("-")


def summary(**over):
    counts = {"ok": 10, "failed": 0, "retried": 0}
    s = {"protocols": {p: {pod: dict(counts) for pod in PODS} for p in PROTOCOLS},
         "phases": [{"name": "1 steady", **counts}, {"name": "3 kill local", **counts}],
         "split": {"100/0": {"http-v1": 10}, "50/50": {"http-v1": 5, "http-v2": 5},
                   "0/100": {"http-v2": 10, "http-v1": 1}},
         "leftovers": []}
    s.update(over)
    return s


def test_judge_names_what_went_wrong():
    assert judge(summary()) == (True, [])
    bad = summary(leftovers=["nm-demo-1-pod-a"],
                  split={"100/0": {"http-v1": 10}, "0/100": {"http-v1": 10}})
    bad["protocols"]["dubbo"]["pod-b"]["ok"] = 0
    bad["phases"][1]["failed"] = 2
    ok, problems = judge(bad)
    assert not ok
    assert problems == ["dubbo from pod-b: no request served",
                        "phase 3 kill local: 2 failed requests",
                        f"the HTTP split did not move: {bad['split']}",
                        "left behind: nm-demo-1-pod-a"]


def test_undo_runs_in_reverse_and_survives_a_failing_step():
    done = []
    undo = Undo()
    undo.push("first", lambda: done.append("first"))
    undo.push("broken", lambda: 1 / 0)
    undo.push("last", lambda: done.append("last"))
    assert undo.close() == ["broken: division by zero"]
    assert done == ["last", "first"] and len(undo) == 0
    assert undo.close() == []                     # twice is harmless


def test_settings_refuse_nonsense():
    with pytest.raises(ValueError, match="duration"):
        DemoSettings(duration=0)
    with pytest.raises(ValueError, match="distinct"):
        DemoSettings(local_port=28010)
