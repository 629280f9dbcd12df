"""Overload pressure, the per-pod split, and the settings' errors."""

import pytest

from agent.failover.overload import event_for, pressure, pressure_of
from agent.failover.settings import FailoverSettings, Overload, SettingsError
from agent.failover.signals import AcceptQueue, Usage
from agent.failover.spill import PodRates, split
from agent.failover.table import Event

T = Overload(loop_lag_ms=50, accept_queue=100, cpu_percent=80, memory_percent=50,
             recover_ratio=0.7, max_level=3)
T_CPU = Overload(cpu_percent=90)          # the defaults an agent runs with


def test_pressure_is_the_worst_signal():
    calm = Usage(busiest_core=0.4, total_cores=0.5, rss=100, memory_limit=1000)
    p = pressure(T, lag_ms=20, queue=AcceptQueue(250, 1024, 2), usage=calm)
    assert (p.source, p.level) == ("accept_queue", 2)
    assert p.ratio == 2.5
    assert "accept_queue 250: 2.50x its threshold" in p.describe()
    assert pressure(T, usage=Usage(0.8, 0.8, 1, None, 1000)).level == 1
    assert pressure(T, lag_ms=1000).level == 3          # capped
    assert pressure(T, usage=Usage(0.1, 0.1, 600, None, 1000)).source == "memory_percent"


def test_cpu_counts_against_one_core_or_the_cgroup_quota():
    assert Usage(0.5, 0.9, 1, None, 1).cpu_fraction == 0.5          # no quota: the busiest loop
    assert Usage(0.5, 0.9, 1, 1.0, 1).cpu_fraction == 0.9           # quota of one core, two procs
    assert Usage().cpu_fraction is None and Usage(rss=5).memory_fraction is None


def test_readings_are_smoothed_over_time_not_ticks():
    from agent.failover.overload import Smoother

    sm = Smoother(tau=1.0)
    assert sm.feed({"cpu_percent": 20.0}, now=0.0) == {}      # not averaged over 1 s yet
    for i in range(1, 9):
        assert sm.feed({"cpu_percent": 20.0}, now=i * 0.1) == {}
    steady = sm.feed({"cpu_percent": 20.0}, now=0.9)["cpu_percent"]
    assert steady == pytest.approx(20.0)
    after_tick = sm.feed({"cpu_percent": 100.0}, now=1.0)["cpu_percent"]
    assert 25 < after_tick < 30                      # one 0.1 s spike barely moves it
    later = sm.feed({"cpu_percent": 100.0}, now=4.0)["cpu_percent"]
    assert later > 95                                # three seconds of it do
    assert sm.feed({}, now=4.1) == {}                # not read this tick: not given out
    assert sm.feed({"cpu_percent": 100.0}, now=4.2)["cpu_percent"] > later   # kept meanwhile
    assert sm.feed({}, now=5.5) == {}                # gone longer than tau: forgotten
    assert sm.feed({"cpu_percent": 0.0}, now=5.6) == {}
    assert Smoother(tau=0).feed({"x": 1.0}, 0) == {"x": 1.0}


def test_a_first_noisy_sample_does_not_decide():
    """What an agent restart saw: its first 0.1 s CPU sample of a busy proxy read
    120% of a core; seeded with it, the average spilled 40% before it decayed."""
    from agent.failover.overload import Smoother

    sm = Smoother(tau=1.0)
    samples = [120.0] + [20.0] * 10
    outs = [sm.feed({"cpu_percent": v}, now=i * 0.1) for i, v in enumerate(samples)]
    assert all(not o for o in outs[:9]) and sm.warming({"cpu_percent": 20.0}) is False
    first = next(o["cpu_percent"] for o in outs if o)
    assert first < 35                                # ~one tenth of the second is the spike
    assert event_for(pressure_of(T_CPU, {"cpu_percent": first}), T_CPU) is Event.RECOVERED


def test_no_signal_is_no_pressure_not_a_guess():
    p = pressure(T)
    assert (p.ratio, p.level, p.source) == (0.0, 0, "none")
    assert event_for(p, T) is Event.RECOVERED


def test_events_have_a_dead_band():
    assert event_for(pressure(T, lag_ms=50), T) is Event.OVERLOAD
    assert event_for(pressure(T, lag_ms=40), T) is None            # between 0.7 and 1.0: hold
    assert event_for(pressure(T, lag_ms=30), T) is Event.RECOVERED


def test_split_fills_the_noisiest_pod_first():
    rates = {1: 100.0, 2: 10.0, 3: 10.0}
    out = split(30.0, rates, pod_max=90.0)
    assert out[1] == pytest.approx(36.0)          # 36 of 100 rps = 30% of 120
    assert out[2] == out[3] == 0.0                # neighbours untouched
    spilled = sum(rates[c] * out[c] / 100 for c in rates)
    assert spilled == pytest.approx(0.30 * 120)


def test_split_moves_to_the_next_pod_when_the_noisiest_is_capped():
    rates = {1: 100.0, 2: 50.0, 3: 10.0}
    out = split(80.0, rates, pod_max=90.0)
    assert out[1] == 90.0
    assert out[2] == pytest.approx(76.0)          # 128 - 90 = 38 of 50
    assert out[3] == 0.0
    assert split(0.0, rates, 90.0) == {1: 0.0, 2: 0.0, 3: 0.0}
    assert split(50.0, {}, 90.0) == {}


def test_pod_rates_see_through_their_own_spill():
    pr = PodRates(pod_max=90.0)
    assert pr.split(20.0) is None                 # nothing known: one share for all
    pr.update({1: 100.0, 2: 10.0}, applied={})
    first = pr.split(20.0)
    assert first[1] > 0 and first[2] == 0
    # pod 1 now spills; the proxy sees less of it, but its estimate holds
    for _ in range(5):
        pr.update({1: 100.0 * (1 - first[1] / 100), 2: 10.0}, applied=first)
    assert pr.rates[1] == pytest.approx(100.0, rel=0.01)
    assert pr.split(20.0) == pytest.approx(first)


def test_settings_from_mapping_names_the_bad_field():
    s = FailoverSettings.from_mapping({"probe_interval": 1, "overload": {"cpu_percent": 50}})
    assert s.probe_interval == 1.0 and s.overload.cpu_percent == 50.0
    with pytest.raises(SettingsError, match=r"nodemesh.failover.probe_intervall: unknown"):
        FailoverSettings.from_mapping({"probe_intervall": 1})
    with pytest.raises(SettingsError, match=r"nodemesh.failover.healthy_probes: must be an integer"):
        FailoverSettings.from_mapping({"healthy_probes": "3"})
    with pytest.raises(SettingsError, match=r"overload.recover_ratio"):
        FailoverSettings.from_mapping({"overload": {"recover_ratio": 1.5}})
    with pytest.raises(SettingsError, match=r"spill_max"):
        FailoverSettings(spill_max=0)
    with pytest.raises(SettingsError, match=r"overload: expected a mapping"):
        FailoverSettings.from_mapping({"overload": 3})
    assert FailoverSettings(run_dir="/r").admin_path == "/r/proxy-local.sock"


def test_settings_from_the_agents_parsed_bootstrap():
    from agent.config.settings import parse_settings
    from agent.failover.settings import from_node_settings

    node, errors = parse_settings({"local_proxy": "127.0.0.1:15001", "admin": "/x/admin.sock",
                                   "failover": {"probe_interval": "2s", "healthy_probes": 5,
                                                "overload": {"cpu_percent": 75}}})
    assert not errors
    s = from_node_settings(node)
    assert (s.probe_interval, s.healthy_probes, s.overload.cpu_percent) == (2.0, 5, 75.0)
    assert s.proxy_listen == "127.0.0.1:15001" and s.run_dir == "/x"
    assert s.admin_path == node.proxy_admin
