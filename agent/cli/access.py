"""Opening the datapath for a command: privileges first, then the pins.

The loader is imported when a command opens the datapath, not before: a
command that only talks to the agent (drain in a preStop hook) starts faster.
"""

from . import privileges
from .errors import not_up
from .options import settings


def datapath(args, require_up=True, **overrides):
    """The Datapath of the pins the options name."""
    from agent.bpf.loader import Datapath

    privileges.require()
    dp = Datapath(settings(args, **overrides))
    if require_up and not dp.is_up():
        raise not_up(dp.s.pin_dir)
    return dp


def control(args):
    """Control of a datapath that is up (exit 3 if not)."""
    from agent.bpf.datapath import Control

    return Control(datapath(args).s)
