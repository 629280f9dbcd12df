"""Settings declared once, checked the same way wherever they come from.

A settings dataclass gives each field a Spec (`setting(...)`): its kind and
range. `check()` reads a value as the field holds it (a duration string
becomes seconds), `parse()` builds the dataclass from a mapping and reports
every bad field by its full name at once, and the dataclass's __post_init__
(`validate()`) applies the same checks to keyword construction. The failover
settings (settings.py) are declared with it; the bootstrap parser
(agent/config/settings.py) derives from them instead of listing them again.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Tuple

SPEC = "nodemesh.spec"
"""Key of a field's Spec in its dataclass metadata."""


class SettingsError(ValueError):
    """A bad `nodemesh.failover` value; `field` is its full name."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field, self.reason = field, reason


@dataclass(frozen=True)
class Spec:
    """What one setting accepts.

    kind: seconds (a number, or a duration like "250ms"), count (an integer),
    number, port, path (absolute, or "" for the default), address (HOST:PORT),
    section (a nested settings dataclass). low/high bound the value, excluded
    when low_open/high_open. node_key: set at `nodemesh.<node_key>` in the
    bootstrap, not in `nodemesh.failover`."""

    kind: str
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    node_key: str = ""
    section: Any = None

    def describe(self) -> str:
        """The accepted range in words, for error messages and the docs."""
        what = {"seconds": "seconds", "count": "an integer", "number": "a number",
                "port": "a port", "path": "an absolute path or \"\"",
                "address": "HOST:PORT"}.get(self.kind, self.kind)
        if self.low is not None and self.high is not None:
            lo, hi = ("(" if self.low_open else "["), (")" if self.high_open else "]")
            return f"{what} in {lo}{_num(self.low)}, {_num(self.high)}{hi}"
        if self.low is not None:
            return f"{what} {'>' if self.low_open else '>='} {_num(self.low)}"
        return what


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def setting(default=None, kind="number", low=None, high=None, *, low_open=False,
            high_open=False, node_key="", factory=None):
    """A dataclass field carrying its Spec."""
    spec = Spec(kind, low, high, low_open, high_open, node_key)
    if factory is not None:
        return field(default_factory=factory, metadata={SPEC: spec})
    return field(default=default, metadata={SPEC: spec})


def section(cls):
    """A nested settings dataclass (a mapping in the bootstrap)."""
    return field(default_factory=cls, metadata={SPEC: Spec("section", section=cls)})


# --- checking and parsing --------------------------------------------------------------------

@functools.cache
def specs(cls) -> Tuple[Tuple[str, Spec], ...]:
    """(name, spec) of every setting of a settings dataclass, in order."""
    return tuple((f.name, f.metadata[SPEC]) for f in dataclasses.fields(cls))


def check(spec: Spec, value: Any, where: str) -> Any:
    """The value as the setting holds it, or SettingsError naming `where`."""
    reader = _READERS[spec.kind]
    value = reader(spec, value, where)
    if isinstance(value, (int, float)) and not _in_range(spec, value):
        raise SettingsError(where, f"must be {spec.describe()}, got {value!r}")
    return value


def parse(data: Any, cls, where: Optional[str] = None, *,
          node_keys: bool = False) -> Tuple[Any, List[SettingsError]]:
    """Settings of `cls` from a mapping, and every problem found (fields with
    problems keep their defaults). node_keys: accept the node settings here
    too (the bootstrap sets them at `nodemesh.<node_key>`)."""
    where = where or cls.WHERE
    if not isinstance(data, Mapping):
        return cls(), [SettingsError(where, f"expected a mapping, got {data!r}")]
    known = dict(specs(cls))
    values, errors = {}, []
    for key, value in data.items():
        name = f"{where}.{key}"
        spec = known.get(key)
        if spec is None:
            errors.append(SettingsError(name, _unknown(str(key), known)))
        elif spec.node_key and not node_keys:
            errors.append(SettingsError(name, f"a node setting: set nodemesh.{spec.node_key}"))
        elif spec.kind == "section":
            values[key], more = parse(value, spec.section, name, node_keys=node_keys)
            errors += more
        else:
            try:
                values[key] = check(spec, value, name)
            except SettingsError as e:
                errors.append(e)
    return cls(**values), errors


def validate(settings):
    """__post_init__: every field checked (and normalised, 1 -> 1.0) by its Spec."""
    for name, spec in specs(type(settings)):
        if spec.kind == "section":
            continue
        value = check(spec, getattr(settings, name), f"{settings.WHERE}.{name}")
        object.__setattr__(settings, name, value)


def _unknown(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown setting{hint} (known: {', '.join(known)})"


def _in_range(spec: Spec, v: float) -> bool:
    if spec.low is not None and (v <= spec.low if spec.low_open else v < spec.low):
        return False
    if spec.high is not None and (v >= spec.high if spec.high_open else v > spec.high):
        return False
    return True


def _number(spec, value, where) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value):
        raise SettingsError(where, f"must be {spec.describe()}, got {value!r}")
    return float(value)


def _seconds(spec, value, where) -> float:
    if isinstance(value, str):
        from agent.config.errors import FieldError
        from agent.config.values import duration_value

        try:
            return duration_value(value, where, allow_zero=True)
        except FieldError as e:
            raise SettingsError(where, e.reason) from None
    return _number(spec, value, where)


def _integer(spec, value, where) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(where, f"must be {spec.describe()}, got {value!r}")
    return value


def _path(spec, value, where) -> str:
    if not isinstance(value, str) or (value and not value.startswith("/")):
        raise SettingsError(where, f"expected an absolute path (or \"\"), got {value!r}")
    return value


def _address(spec, value, where) -> str:
    host, sep, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(where, f"expected \"HOST:PORT\", got {value!r}")
    return value


_READERS = {"seconds": _seconds, "number": _number, "count": _integer, "port": _integer,
            "path": _path, "address": _address}
