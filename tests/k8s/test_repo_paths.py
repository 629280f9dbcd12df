"""Everything the Dockerfile and the manifests name exists in the repository:
copied paths, the console script, and the CLI commands and flags."""

import re
import tomllib
import warnings

import pytest

from agent.cli import main as cli_main

from .manifests import ROOT, TARGETS, build, containers, need, kubectls

# Subcommands the manifests run that the CLI does not have yet (the agent,
# proxy, status and drain commands are being written); each is checked in
# full as soon as it exists.
PENDING = {"agent", "proxy", "status", "drain"}


def dockerfile_lines():
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_dockerfile_copies_paths_that_exist_and_are_not_ignored():
    ignore = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
              if p.strip() and not p.startswith("#")]
    included = {p[1:].rstrip("/") for p in ignore if p.startswith("!")}
    copies = [line.split()[1:-1] for line in dockerfile_lines()
              if line.startswith("COPY") and "--from" not in line]
    assert copies
    for sources in copies:
        for src in sources:
            assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is not in the repository"
            assert src.rstrip("/") in included, f".dockerignore leaves {src} out of the context"


def test_dockerfile_runs_the_console_script():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "nodemesh" in scripts
    text = (ROOT / "Dockerfile").read_text()
    assert "/opt/nodemesh/bin/nodemesh version" in text
    assert re.search(r'CMD \["nodemesh"', text)


def manifest_commands():
    need(kubectls().get("kubectl"), "kubectl")
    seen = {}
    for target in TARGETS:
        for workload, c in containers(build(target)):
            cmds = [c["command"]]
            for key in ("startupProbe", "readinessProbe", "livenessProbe"):
                if key in c:
                    cmds.append(c[key]["exec"]["command"])
            if "lifecycle" in c:
                cmds.append(c["lifecycle"]["preStop"]["exec"]["command"])
            for cmd in cmds:
                seen[tuple(cmd)] = f"{workload}/{c['name']}"
    return seen


def cli_subcommands() -> set:
    parser = cli_main.parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return set(sub.choices)


def test_manifest_commands_are_nodemesh_commands_the_cli_accepts():
    existing = cli_subcommands()
    pending = set()
    for cmd, where in manifest_commands().items():
        assert cmd[0] == "nodemesh", f"{where}: runs {cmd[0]}, not the console script"
        if cmd[1] not in existing:
            assert cmd[1] in PENDING, f"{where}: `nodemesh {cmd[1]}` is not a CLI command"
            pending.add(" ".join(cmd))
            continue
        try:
            cli_main.parser().parse_args(list(cmd[1:]))
        except SystemExit as exc:
            pytest.fail(f"{where}: `{' '.join(cmd)}` does not parse ({exc})")
        except Exception as exc:   # noqa: BLE001 - CLIError on a usage error
            pytest.fail(f"{where}: `{' '.join(cmd)}` does not parse: {exc}")
    if pending:
        warnings.warn("manifest commands waiting for the CLI: " + "; ".join(sorted(pending)))


def test_pending_commands_are_still_pending_or_now_checked():
    # A PENDING name that the CLI now has is simply checked above; this keeps
    # the list honest about what the manifests rely on.
    used = {cmd[1] for cmd in manifest_commands()}
    assert PENDING <= used | cli_subcommands()
