"""Opening the datapath for a command: privileges first, then the pins."""

from agent.bpf.datapath import Control
from agent.bpf.loader import Datapath

from . import privileges
from .errors import not_up
from .options import settings


def datapath(args, require_up=True, **overrides) -> Datapath:
    privileges.require()
    dp = Datapath(settings(args, **overrides))
    if require_up and not dp.is_up():
        raise not_up(dp.s.pin_dir)
    return dp


def control(args) -> Control:
    """Control of a datapath that is up (exit 3 if not)."""
    return Control(datapath(args).s)
