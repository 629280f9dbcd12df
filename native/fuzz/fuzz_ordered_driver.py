"""The Python half of fuzz_ordered.c: input bytes -> a scenario of
tests/proxy/test_ordered_fast.py, run with the C path and with the Python path;
an exception or a difference is a finding.

Input: byte 0 codec (even: redis, odd: http1); byte 1 options (bits: routed,
outlier, tight breaker, tight fairness, one request per connection, depth 1,
one host); byte 2 n replies (1-8) and n reply choices; then steps, an opcode
byte and its operands each (short inputs end the scenario).
"""

from __future__ import annotations

import logging

from agent.proxy import ordered, session  # noqa: F401  (session loads the C path's classes)
from tests.proxy.test_ordered_fast import both

logging.disable(logging.CRITICAL)
MAX_STEPS = 48


def _options(bits: int) -> dict:
    return {"routed": bool(bits & 1), "outlier": bool(bits & 2),
            "breaker": 2 if bits & 4 else 1024, "fair": 2 if bits & 8 else 100,
            "per_conn": 1 if bits & 16 else 1024, "depth": 1 if bits & 32 else 4,
            "hosts": 1 if bits & 64 else 2}


def _cut(b: int):
    return None if b < 128 else b - 127          # one read, or reads of 1-128 bytes


def decode(data: bytes):
    if len(data) < 3:
        return None
    codec = "redis" if data[0] % 2 == 0 else "http1"
    opts = _options(data[1])
    n = data[2] % 8 + 1
    replies = [b % 4 for b in data[3:3 + n]] or [0]
    i, script = 3 + n, []
    while i + 2 < len(data) and len(script) < MAX_STEPS:
        op, a, b = data[i] % 8, data[i + 1], data[i + 2]
        i += 3
        if op in (0, 1):
            script.append(("round", a % 3, b % 4))
        elif op == 2:
            script.append(("send", a % 3, [b % 4, (b >> 2) % 4][:1 + (a >> 6) % 2], _cut(b)))
        elif op in (3, 4):
            script.append(("answer", a % 2, _cut(b)))
        elif op == 5:
            script.append(("part", a % 2, b % 64 + 1))
        elif op == 6:
            script.append(("timeout",))
        else:
            script.append(("gone", a % 3))
    return codec, script, replies, opts


def one(data: bytes) -> None:
    decoded = decode(data)
    if decoded is None:
        return
    codec, script, replies, opts = decoded
    with_c, python = both(codec, script, replies, **opts)
    if with_c != python:
        diff = {k: (with_c[k], python[k]) for k in with_c if with_c[k] != python[k]}
        raise AssertionError(f"C and Python paths differ: {codec} {opts} {script} "
                             f"{replies}: {diff}")
