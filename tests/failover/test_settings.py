"""Every failover setting, from the bootstrap's `nodemesh.failover` to the running controller.

The values are generated from the settings dataclass itself (each field's
Spec), so a setting added there is covered here without touching this file.
"""

import asyncio
import dataclasses
import pathlib
import re
import types

import pytest
import yaml

from agent.config.bootstrap import parse_bootstrap
from agent.config.errors import ConfigErrors
from agent.config.settings import parse_settings
from agent.failover.controller import FailoverController
from agent.failover.settings import (
    FailoverSettings,
    Overload,
    SettingsError,
    check,
    from_node_settings,
    specs,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
NODE = {"local_proxy": "198.18.0.1:35001", "proxy_admin": "/tmp/nm-fo-x/proxy.sock",
        "admin": "/tmp/nm-fo-x/admin.sock"}


def settings_of(cls):
    """(name, spec) of every setting a bootstrap sets in `nodemesh.failover`, sections flattened."""
    for name, spec in specs(cls):
        if spec.kind == "section":
            for sub, sub_spec in settings_of(spec.section):
                yield f"{name}.{sub}", sub_spec
        elif not spec.node_key:
            yield name, spec


def default_of(path):
    obj = FailoverSettings()
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def other_value(path, spec):
    """A valid value that is not the default."""
    default = default_of(path)
    if spec.kind == "path":
        return "/sys/fs/cgroup/nm-fo-test"
    candidates = [default * 2, default / 2, default + 1, default - 1] if default else [1, 0.5]
    for v in candidates:
        v = int(v) if spec.kind in ("count", "port") else v
        try:
            if check(spec, v, path) != default:
                return v
        except SettingsError:
            pass
    raise AssertionError(f"no other valid value for {path}")


def bad_value(spec):
    """A value each kind refuses: below the range, or not a number / path at all."""
    if spec.kind == "path":
        return "relative/dir"
    if spec.low is None:
        return "not a number"
    return spec.low - 1 if not spec.low_open else spec.low


def nest(flat):
    out = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        d = out
        for p in parents:
            d = d.setdefault(p, {})
        d[leaf] = value
    return out


def as_written(spec, value):
    """Seconds as a bootstrap writes them ("250ms"), to exercise duration parsing."""
    if spec.kind == "seconds" and (value * 1000).is_integer():
        return f"{int(value * 1000)}ms"
    return value


def bootstrap_errors(nodemesh) -> list:
    """What an operator reads when the agent refuses a bootstrap."""
    with pytest.raises(ConfigErrors) as info:
        parse_bootstrap(yaml.safe_dump({"nodemesh": nodemesh}), "test.yaml")
    return [str(e) for e in info.value.errors]


def test_every_setting_reaches_the_running_controller():
    wanted = {path: other_value(path, spec) for path, spec in settings_of(FailoverSettings)}
    assert {"unhealthy_probes", "flap_window", "spill_decay", "remote_up_probes",
            "drain_settle", "overload.recover_ratio", "overload.max_level",
            "overload.smoothing_s"} <= set(wanted)
    written = {p: as_written(dict(settings_of(FailoverSettings))[p], v) for p, v in wanted.items()}
    node = parse_bootstrap(yaml.safe_dump({"nodemesh": {**NODE, "failover": nest(written)}}),
                           "test.yaml").settings

    async def run():
        agent = types.SimpleNamespace(control=None, admin=None, settings=node)
        c = FailoverController()
        c.start(agent)                                      # as the agent starts it
        await asyncio.sleep(0)
        try:
            return c, c.status()
        finally:
            await c.stop()
    c, status = asyncio.run(run())
    s = c.settings
    for path, value in wanted.items():
        got = s
        for part in path.split("."):
            got = getattr(got, part)
        assert got == pytest.approx(value) if not isinstance(value, str) else got == value, path
    # the node settings come from `nodemesh.*`
    assert (s.proxy_admin, s.proxy_listen, s.run_dir) == (NODE["proxy_admin"],
                                                           NODE["local_proxy"], "/tmp/nm-fo-x")
    # ... and the parts built from them use them
    p = c.policy
    assert (p.healthy_probes, p.flap_window, p.flap_backoff_max, p.spill_step, p.spill_decay,
            p.spill_max) == (s.healthy_probes, s.flap_window, s.flap_backoff_max, s.spill_step,
                             s.spill_decay, s.spill_max)
    assert c.history.transitions.maxlen == s.transitions_kept
    assert c.pod_rates.pod_max == s.pod_spill_max
    assert c.smoother.tau == s.overload.smoothing_s
    assert (c.remote.up, c.remote.down) == (s.remote_up_probes, s.remote_down_probes)
    # the status document shows what it runs with
    assert status["settings"] == dataclasses.asdict(s)


def test_every_bad_value_is_rejected_by_its_name_all_at_once():
    bad = {path: bad_value(spec) for path, spec in settings_of(FailoverSettings)}
    text = bootstrap_errors({**NODE, "failover": nest(bad)})
    for path in bad:
        assert any(f"nodemesh.failover.{path}: must be" in t or
                   f"nodemesh.failover.{path}: expected" in t for t in text), (path, text)
    assert len(text) == len(bad)                        # one each, none hidden behind another


def test_error_messages_say_what_is_accepted():
    def first_error(section):
        errors = bootstrap_errors({"failover": section})
        assert len(errors) == 1, errors
        return errors[0].split(": ", 1)[1]          # past 'bootstrap "test.yaml"'

    assert first_error({"overload": {"max_level": 0}}) == \
        "nodemesh.failover.overload.max_level: must be an integer in [1, 10], got 0"
    assert first_error({"overload": {"recover_ratio": 1}}) == \
        "nodemesh.failover.overload.recover_ratio: must be a number in (0, 1), got 1.0"
    assert first_error({"probe_interval": "fast"}).startswith(
        "nodemesh.failover.probe_interval: expected a duration")
    assert first_error({"probe_interval": "0s"}) == \
        "nodemesh.failover.probe_interval: must be seconds in (0, 3600], got 0.0"
    assert first_error({"healthy_probes": True}).startswith(
        "nodemesh.failover.healthy_probes: must be an integer in [1, 1000], got True")
    assert first_error({"probe_intervall": 1}).startswith(
        "nodemesh.failover.probe_intervall: unknown setting; did you mean probe_interval?")
    assert first_error({"overload": [1]}).startswith(
        "nodemesh.failover.overload: expected a mapping")
    # the node's own settings are set once, for everyone, at nodemesh.<key>
    assert first_error({"proxy_admin": "/x.sock"}) == \
        "nodemesh.failover.proxy_admin: a node setting: set nodemesh.proxy_admin"
    assert first_error({"run_dir": "/x"}) == \
        "nodemesh.failover.run_dir: a node setting: set nodemesh.admin"


def test_keywords_and_the_standalone_mapping_are_checked_the_same_way():
    with pytest.raises(SettingsError, match=r"^nodemesh.failover.overload.max_level: must be"):
        Overload(max_level=11)
    with pytest.raises(SettingsError, match=r"^nodemesh.failover.spill_max: must be"):
        FailoverSettings(spill_max=0)
    assert FailoverSettings(probe_interval=2).probe_interval == 2.0          # normalised
    assert isinstance(FailoverSettings(probe_interval=2).probe_interval, float)
    s = FailoverSettings.from_mapping({"run_dir": "/r", "probe_interval": "250ms",
                                       "overload": {"max_level": 5}})
    assert (s.run_dir, s.probe_interval, s.overload.max_level) == ("/r", 0.25, 5)
    with pytest.raises(SettingsError) as info:
        FailoverSettings.from_mapping({"spill_max": 0, "overload": {"max_level": 0}})
    assert "nodemesh.failover.spill_max" in str(info.value)
    assert "nodemesh.failover.overload.max_level" in str(info.value)


def test_node_settings_fill_what_the_bootstrap_sets_elsewhere():
    node, errors = parse_settings({**NODE, "failover": {"healthy_probes": 5}})
    assert not errors
    s = from_node_settings(node, probe_interval=0.5)
    assert (s.healthy_probes, s.probe_interval, s.admin_path) == (5, 0.5, NODE["proxy_admin"])
    assert s.override_file == "/tmp/nm-fo-x/failover-override.json"


def test_docs_list_every_setting_with_its_default():
    """docs/failover.md's settings table: one row per setting, its default as the code has it."""
    text = (ROOT / "docs" / "failover.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z_.]+)` \| `([^`]*)` \|", text, re.MULTILINE))
    for path, spec in settings_of(FailoverSettings):
        assert path in rows, f"docs/failover.md: no row for {path}"
        default = default_of(path)
        shown = rows[path].strip('"')
        if spec.kind == "seconds":
            shown = shown.removesuffix("s")
        assert shown == (f"{default:g}" if isinstance(default, (int, float)) else default), path
    config = (ROOT / "docs" / "config.md").read_text()     # its nodemesh example: every key
    for path, _spec in settings_of(FailoverSettings):
        assert re.search(rf"\b{path.rpartition('.')[2]}:", config), f"docs/config.md: {path}"
