"""Rendering: tables that fit 80 columns, `-o wide|json|yaml`, colour on a TTY.

Machine formats print the command's data as is (a stable schema, see
schemas.py); tables are for people and may change.
"""

import json
import os
import sys

FORMATS = ("table", "wide", "json", "yaml")
WIDTH = 80
ELLIPSIS = "~"
COLOURS = {"ok": "32", "warn": "33", "fail": "31", "dim": "2", "bold": "1"}


def use_colour(stream=None) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR"):
        return False
    return hasattr(stream, "isatty") and stream.isatty()


def paint(text: str, colour: str, stream=None) -> str:
    if not use_colour(stream) or colour not in COLOURS:
        return text
    return f"\033[{COLOURS[colour]}m{text}\033[0m"


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(_cell(v) for v in value) or "-"
    return str(value)


def _fit(widths: list, limit: int) -> list:
    """Shrink the widest columns until the row (2 spaces apart) fits."""
    widths = list(widths)
    while sum(widths) + 2 * (len(widths) - 1) > limit:
        i = max(range(len(widths)), key=widths.__getitem__)
        if widths[i] <= 6:
            break
        widths[i] -= 1
    return widths


def table(rows: list, columns: list, wide=False, limit=WIDTH) -> str:
    """rows: dicts; columns: (header, key) pairs. Wide: no width limit."""
    cells = [[_cell(r.get(key)) for _, key in columns] for r in rows]
    heads = [h for h, _ in columns]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(heads)]
    if not wide:
        widths = _fit(widths, limit)

    def line(values):
        out = []
        for v, w in zip(values, widths):
            out.append(v if len(v) <= w else v[:w - len(ELLIPSIS)] + ELLIPSIS)
        return "  ".join(v.ljust(w) for v, w in zip(out, widths)).rstrip()

    return "\n".join([line(heads)] + [line(c) for c in cells])


def pairs(items: list, limit=WIDTH) -> str:
    """`key: value` lines (status views), values cut to fit."""
    if not items:
        return ""
    pad = max(len(k) for k, _ in items) + 1
    out = []
    for k, v in items:
        text = f"{k + ':':<{pad}} {_cell(v)}"
        out.append(text if len(text) <= limit else text[:limit - 1] + ELLIPSIS)
    return "\n".join(out)


def clip(text: str, limit=WIDTH) -> str:
    """One line cut to the terminal width."""
    return text if len(text) <= limit else text[:limit - len(ELLIPSIS)] + ELLIPSIS


def unavailable_text(unavailable: dict, limit=WIDTH) -> str:
    """The `unavailable:` block commands print under partial results."""
    if not unavailable:
        return ""
    import textwrap

    lines = ["unavailable:"]
    for k, v in sorted(unavailable.items()):
        lines += textwrap.wrap(f"{k}: {v}", limit, initial_indent="  ", subsequent_indent="    ",
                               break_on_hyphens=False)
    return "\n".join(lines)


def emit(data, fmt: str, human, stream=None):
    """Print data as json/yaml, or human(wide: bool) -> str for table/wide."""
    stream = stream or sys.stdout
    if fmt == "json":
        stream.write(json.dumps(data, indent=2) + "\n")
    elif fmt == "yaml":
        import yaml

        stream.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
    else:
        text = human(fmt == "wide")
        if text:
            stream.write(text + "\n")
