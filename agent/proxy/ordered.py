"""The ordered lean path in C (agent.proxy._ordered, native/ordered.c).

`session_read(session, data)` is Session.data_received (the read, the frame
checks of Session._process and, for one request on a batchable route,
`send_one(session, frame, now, route, data, fed)`: Session._send_one down to
UpstreamConn.send); `upstream_read(conn, data)` is UpstreamConn.data_received
with `replies(conn, frames) -> i`, UpstreamConn._responses_in_order for the
first i frames down to Delivery._finish, and _after_responses. Each is one C
call on the same objects, with the same effects as the Python methods; the C
code hands over to those methods (and the ones they call) at the first step
that is not the plain case. All are None when the extension is not built or
does not fit the classes it reads (then the Python path runs, as it does when
NODEMESH_ORDERED_C=0).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

send_one = replies = session_read = upstream_read = None


def _load():
    from agent.codec import CodecError
    from agent.codec._native import lib

    from . import _ordered, circuit, fairness, metrics, protocols, router
    from .delivery import PAUSE_LIMITS, PAUSE_WRITE
    from .hosts import Host
    from .request import Request
    from .session import Session
    from .upstream import UpstreamConn, _http_expect

    template = Request(None, None, None, b"", "request", 0, None, "", 0.0, 0.0)
    _ordered.init(Session, Request, UpstreamConn, metrics.Slot, circuit._Gate, fairness._Pod,
                  Host, router.RouteRuntime, template, metrics._BOUNDS_S,
                  protocols._by_kind, protocols._status, _http_expect,
                  lib.NM_FRAME_KEEPALIVE, lib.NM_FRAME_UNTIL_CLOSE, PAUSE_LIMITS,
                  CodecError, lib.NM_FRAME_UPGRADE, PAUSE_WRITE)
    return _ordered.send_one, _ordered.replies, _ordered.session_read, _ordered.upstream_read


def enable(on: bool = True) -> None:
    """Turn the C path on (when it loads) or off. The session and the upstream connection
    read these names on every call; their data_received is the C read itself while on
    (no Python frame before it: uvloop calls it once per read), their Python one (_read_py)
    while off."""
    global send_one, replies, session_read, upstream_read
    send_one = replies = session_read = upstream_read = None
    if on:
        try:
            send_one, replies, session_read, upstream_read = _load()
        except ImportError:
            log.debug("agent.proxy._ordered is not built: the ordered lean path stays in "
                      "Python")
        except (TypeError, AttributeError, ValueError) as exc:
            log.warning("the ordered lean path stays in Python: %s", exc)
    _bind_reads()


def _bind_reads() -> None:
    from .session import Session
    from .upstream import UpstreamConn

    if session_read is None:
        Session.data_received = Session._read_py
        UpstreamConn.data_received = UpstreamConn._read_py
    else:
        from . import _ordered

        Session.data_received = _ordered.method(session_read)
        UpstreamConn.data_received = _ordered.method(upstream_read)


def enable_default() -> None:
    """On unless NODEMESH_ORDERED_C=0 (called once agent.proxy.session is loaded: the
    extension reads its classes)."""
    enable(os.environ.get("NODEMESH_ORDERED_C", "1") != "0")
