"""CLI behaviour that needs no kernel: parsing, errors, output, the agent link."""

import errno
import io
import os
import socket
import subprocess
import sys

import pytest

from agent.cli import agent_link, errors, output, privileges
from agent.cli.main import parser


def test_every_help_has_examples():
    p = parser()
    seen = []

    def walk(prs):
        assert "examples:" in (prs.epilog or ""), prs.prog
        seen.append(prs.prog)
        for action in prs._actions:
            if getattr(action, "choices", None) and hasattr(action, "_name_parser_map"):
                for sub in action._name_parser_map.values():
                    walk(sub)

    walk(p)
    for cmd in ("nodemesh datapath up", "nodemesh service add", "nodemesh doctor",
                "nodemesh uninstall", "nodemesh enroll", "nodemesh stats", "nodemesh version"):
        assert cmd in seen


OTHERS = ("proxy", "agent", "xds-serve", "failover", "drain")
"""Commands whose modules other engineers own (their help is theirs to fit)."""


def test_every_help_fits_80_columns():
    import argparse

    def walk(prs):
        yield prs
        for action in prs._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    if name not in OTHERS:
                        yield from walk(sub)

    for prs in walk(parser()):
        long = [line for line in prs.format_help().splitlines() if len(line) > 80]
        assert not long, (prs.prog, long)


@pytest.mark.parametrize("argv,needle", [
    (["service", "add", "198.18.0.10", "--protocol", "redis"], "expected IP:PORT like"),
    (["service", "add", "198.18.0:80", "--protocol", "redis"], "not an IPv4 address"),
    (["service", "add", "198.18.0.10:99999", "--protocol", "redis"], "not in 1-65535"),
    (["service", "add", "198.18.0.10:80", "--protocol", "smtp"], "invalid choice: 'smtp'"),
    (["service", "add", "198.18.0.10:80"], "--protocol"),
    (["datapath", "set", "--spill", "150"], "150% not in 0-100"),
    (["datapath", "set", "--trace", "maybe"], "expected on or off"),
    (["datapath", "up", "-D", "lower=1"], "expected NAME=VALUE"),
    (["stats", "-o", "xml"], "invalid choice: 'xml'"),
    (["frobnicate"], "invalid choice"),
])
def test_usage_errors_are_one_line_exit_2(nm, argv, needle):
    r = nm(*argv)
    assert r.code == errors.USAGE, r
    assert r.out == ""
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nodemesh: "), r.err
    assert needle in lines[0]
    assert "--help`" in lines[0]


def test_not_up_is_exit_3(nm, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the privilege check comes first")
    empty = tmp_path / "no-pins"
    for argv in (["service", "list"], ["stats"], ["pods"], ["datapath", "status"],
                 ["datapath", "set", "--mode", "bypass"]):
        r = nm(*argv, "--pin-dir", empty)
        assert r.code == errors.NOT_UP, r
        assert r.err == (f"nodemesh: datapath not up in {empty}: run `nodemesh datapath up` "
                         "(or pass the right --pin-dir)\n")


def test_not_root_is_exit_4(nm, monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(privileges, "effective_caps", lambda *a: 0)
    from agent.bpf import host

    explain = ["explain", "--cgroup", host.cgroup2_mount() or "/sys/fs/cgroup", "198.18.0.1:80"]
    for argv in (["service", "list"], ["datapath", "up"], ["uninstall"], ["stats"], ["trace"],
                 explain):
        r = nm(*argv, "--pin-dir", tmp_path)
        assert r.code == errors.PERMISSION, r
        needed = ", ".join(privileges.NEEDED)
        assert r.err == (f"nodemesh: not root ({needed} not effective): run as root "
                         f"(needs {needed})\n"), r.err
        assert r.err.count("\n") == 1


def test_eperm_from_the_kernel_is_exit_4():
    err = errors.from_exception(PermissionError(errno.EPERM, "open pinned /x: Operation "
                                                              "not permitted"))
    assert err.code == errors.PERMISSION
    assert err.line().startswith("nodemesh: open pinned /x: Operation not permitted: run as root")


def test_host_error_is_exit_5():
    from agent.bpf.host import HostError

    err = errors.from_exception(HostError("no kernel headers for 6.18"))
    assert err.code == errors.UNSUPPORTED
    assert err.line() == "nodemesh: no kernel headers for 6.18: see `nodemesh doctor`"


def test_bugs_keep_their_traceback():
    assert errors.from_exception(ZeroDivisionError()) is None


def test_table_fits_80_columns():
    rows = [{"a": "x" * 70, "b": "y" * 50, "c": 1}]
    text = output.table(rows, [("A", "a"), ("B", "b"), ("C", "c")])
    assert all(len(line) <= 80 for line in text.splitlines())
    assert output.ELLIPSIS in text
    wide = output.table(rows, [("A", "a"), ("B", "b"), ("C", "c")], wide=True)
    assert "x" * 70 in wide and "y" * 50 in wide


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_colour_only_on_a_tty_and_never_with_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert output.paint("ok", "ok", Tty()) == "\033[32mok\033[0m"
    assert output.paint("ok", "ok", io.StringIO()) == "ok"
    monkeypatch.setenv("NO_COLOR", "1")
    assert output.paint("ok", "ok", Tty()) == "ok"


@pytest.fixture
def agent_socket(tmp_path):
    path = tmp_path / "admin.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(8)
    yield tmp_path
    s.close()


def test_agent_link_sees_a_listener(agent_socket, tmp_path_factory):
    assert agent_link.agent_running(str(agent_socket))
    assert not agent_link.agent_running(str(tmp_path_factory.mktemp("none")))


def test_stale_socket_file_is_not_an_agent(tmp_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(tmp_path / "admin.sock"))
    s.close()   # file left behind, nobody listening
    assert not agent_link.agent_running(str(tmp_path))


def test_mutating_commands_refuse_when_the_agent_runs(nm, agent_socket, monkeypatch):
    # the agent check runs before any map is touched once the datapath is up;
    # without a datapath, guard() itself is what we exercise here
    with pytest.raises(errors.CLIError) as exc:
        agent_link.guard(str(agent_socket), force=False, what="services map")
    line = exc.value.line()
    assert line == (f"nodemesh: the agent at {agent_socket}/admin.sock owns the services map: "
                    "change its configuration instead, or pass --force")
    agent_link.guard(str(agent_socket), force=True, what="services map")   # warns only


def test_console_entry_point_runs_without_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.getcwd(), NODEMESH_PIN_DIR=str(tmp_path / "x"))
    res = subprocess.run([sys.executable, "-m", "agent.cli.main", "service", "add", "bad",
                          "--protocol", "redis"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1


def test_version(nm):
    r = nm("version", "-o", "json")
    assert r.code == 0
    assert set(r.json()) == {"version", "python", "bpf_source_digest"}
