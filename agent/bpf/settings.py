"""Where the datapath lives: pins, cgroup root, runtime files.

Kept apart from the loader so that commands which only need the paths
(`nodemesh drain` in a preStop hook, `status`) start without parsing
libbpf's declarations.
"""

import dataclasses
import os
import pathlib

DEFAULT_PIN_DIR = "/sys/fs/bpf/nodemesh"


@dataclasses.dataclass
class Settings:
    """Where the datapath lives. Defaults are the node's; tests use their own."""

    pin_dir: str = dataclasses.field(
        default_factory=lambda: os.environ.get("NODEMESH_PIN_DIR", DEFAULT_PIN_DIR))
    """bpffs directory of every pinned map, program and link."""
    cgroup_root: str = dataclasses.field(
        default_factory=lambda: os.environ.get("NODEMESH_CGROUP_ROOT", ""))
    """cgroup v2 directory the programs attach to; empty: the v2 mount root."""
    run_dir: str = dataclasses.field(
        default_factory=lambda: os.environ.get("NODEMESH_RUN_DIR", "/run/nodemesh"))
    """Runtime files: the datapath's state file, sockets."""
    defines: dict = dataclasses.field(default_factory=dict)
    """Extra -D flags (NM_MAX_CONNS=...), see bpf/lib/config.h."""

    @property
    def state_file(self) -> pathlib.Path:
        tag = pathlib.Path(self.pin_dir).name
        return pathlib.Path(self.run_dir) / f"datapath-{tag}.json"
