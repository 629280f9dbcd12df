"""The pinned maps, read without failing the command.

Commands whose main source is an admin API (routes, clusters, services,
stats) still show what the kernel knows when the agent and proxy are down,
and say why a part is missing instead of exiting: each read returns the data
or None, with the reason recorded in `unavailable`.
"""

from agent.bpf.datapath import Control
from agent.bpf.loader import Datapath

from . import privileges
from .errors import CLIError


class DatapathView:
    """Lazy reads of one datapath's maps; `control` is None when it cannot be read."""

    def __init__(self, settings, unavailable: dict):
        self.s = settings
        self.unavailable = unavailable
        self.control = self._open()

    def _open(self):
        try:
            privileges.require()
        except CLIError as e:
            self.unavailable["datapath"] = str(e)
            return None
        if not Datapath(self.s).is_up():
            self.unavailable["datapath"] = (f"not loaded (no pins in {self.s.pin_dir}); "
                                            "run `nodemesh datapath up`")
            return None
        return Control(self.s)

    def read(self, what: str):
        """Control.<what>() or None (reason recorded) when the datapath is not there."""
        if self.control is None:
            return None
        try:
            return getattr(self.control, what)()
        except (OSError, RuntimeError) as e:
            self.unavailable[f"datapath {what}"] = str(e)
            return None

    def close(self):
        if self.control is not None:
            self.control.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
