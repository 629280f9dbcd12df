"""envoy.config.listener.v3.Listener -> model.Listener.

A listener is one mesh service as the node proxy sees it: the local proxy
accepts everything on one port and picks the listener by the connection's
original destination (VIP, port), so `bind_to_port: false` (Istio's
per-VIP outbound listeners) and `use_original_dst` (its 15001 catch-all)
need nothing special. `0.0.0.0:PORT` listeners are the fallback for any
VIP on that port. Filter chains keep their destination prefix ranges; chains
that can only match what nodemesh never sees (TLS, SNI, ALPN other than
HTTP/1.1, another destination port, source conditions) are skipped with a
note.
"""

from __future__ import annotations

import ipaddress
from sys import intern
from typing import List, Optional

from .context import Context
from .errors import FieldError
from .filters import REFUSED, TERMINAL, filter_type, serving_fields
from .model import FilterChain, Listener
from .values import NODEMESH, bool_value, check_keys, filter_metadata, int_value, socket_address

RAW_BUFFER = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
_LISTENER_KEYS = ("remote_port", "rate_limit_per_source_pod")


def compile_listener(listener, ctx: Context) -> Listener:
    if not listener.name:
        raise FieldError("name", "must not be empty")
    _refuse_unsupported(listener)
    if not listener.HasField("address"):
        raise FieldError("address", "required (internal listeners are not supported)")
    try:
        address, port = socket_address(listener.address)
    except FieldError as exc:
        raise exc.within("address") from None
    section = filter_metadata(listener.metadata) if listener.HasField("metadata") else {}
    where = f"metadata.filter_metadata.{NODEMESH}"
    check_keys(section, _LISTENER_KEYS, where)
    per_pod = bool_value(section.get("rate_limit_per_source_pod", False),
                         f"{where}.rate_limit_per_source_pod")
    chains = _chains(listener, port, ctx, per_pod)
    remote = section.get("remote_port")
    remote_port = int_value(remote, f"{where}.remote_port", low=1, high=65535) \
        if remote is not None else ctx.remote_port_for(listener.name, address, port)
    return Listener(name=intern(listener.name), version=ctx.version, address=address, port=port,
                    filter_chains=tuple(chains), remote_port=remote_port)


def _refuse_unsupported(listener) -> None:
    if listener.HasField("api_listener"):
        raise FieldError("api_listener", "API listeners are not supported")
    if listener.HasField("internal_listener"):
        raise FieldError("internal_listener", "internal listeners are not supported")
    if listener.HasField("udp_listener_config"):
        raise FieldError("udp_listener_config", "UDP is not supported")
    if listener.HasField("filter_chain_matcher"):
        raise FieldError("filter_chain_matcher", "unified matchers are not supported; "
                                                 "use filter_chain_match")
    if listener.HasField("fcds_config"):
        raise FieldError("fcds_config", "filter chain discovery is not supported")


def _chains(listener, port: int, ctx: Context, per_pod: bool) -> List[FilterChain]:
    total = len(listener.filter_chains) + (1 if listener.HasField("default_filter_chain") else 0)
    if total > ctx.limits.max_filter_chains:
        raise FieldError("filter_chains", f"more than {ctx.limits.max_filter_chains} chains")
    sources = [(f"filter_chains[{i}]", fc, True) for i, fc in enumerate(listener.filter_chains)]
    if listener.HasField("default_filter_chain"):
        sources.append(("default_filter_chain", listener.default_filter_chain, False))
    chains = []
    for field, fc, matchable in sources:
        name = fc.name or f"{listener.name}/{field}"
        try:
            with ctx.scope(field):
                prefixes = _usable_match(fc, port, ctx) if matchable else ()
                if prefixes is None:
                    continue
                chains.append(_chain(fc, name, prefixes, ctx, per_pod))
        except FieldError as exc:
            raise exc.within(field) from None
    if not chains:
        raise FieldError("filter_chains", "no filter chain nodemesh can serve")
    return chains


def _usable_match(fc, port: int, ctx: Context) -> Optional[tuple]:
    """The chain's destination prefixes, or None when it can never match for us."""
    if not fc.HasField("filter_chain_match"):
        return ()
    m = fc.filter_chain_match
    skip = None
    if m.HasField("destination_port") and m.destination_port.value != port:
        skip = f"destination_port {m.destination_port.value} is not the listener's port"
    elif m.transport_protocol not in ("", "raw_buffer"):
        skip = f"transport_protocol {m.transport_protocol!r} (nodemesh sees plaintext)"
    elif len(m.server_names):
        skip = "server_names (SNI) never match plaintext"
    elif len(m.application_protocols) and "http/1.1" not in m.application_protocols:
        skip = f"application_protocols {list(m.application_protocols)}"
    elif len(m.source_prefix_ranges) or len(m.direct_source_prefix_ranges) or \
            len(m.source_ports) or m.source_type != 0:
        skip = "source conditions are not matched by nodemesh"
    if skip:
        ctx.note("", f"skipped: {skip}")
        return None
    prefixes = []
    for i, cidr in enumerate(m.prefix_ranges):
        plen = cidr.prefix_len.value if cidr.HasField("prefix_len") else None
        try:
            net = ipaddress.ip_network(cidr.address_prefix if plen is None
                                       else f"{cidr.address_prefix}/{plen}", strict=False)
        except ValueError as exc:
            raise FieldError(f"filter_chain_match.prefix_ranges[{i}]", str(exc)) from None
        prefixes.append(str(net))
    return tuple(prefixes)


def _chain(fc, name: str, prefixes: tuple, ctx: Context, per_pod: bool) -> FilterChain:
    if fc.HasField("transport_socket") and not is_plaintext(fc.transport_socket):
        raise FieldError("transport_socket", "TLS termination is not supported")
    seen = []
    for i, f in enumerate(fc.filters):
        type_name = filter_type(f)
        if type_name in TERMINAL:
            try:
                with ctx.scope(f"filters[{i}]"):
                    fields = serving_fields(f, type_name, name, ctx, per_pod)
            except FieldError as exc:
                raise exc.within(f"filters[{i}]") from None
            _note_ignored_after(fc, i, ctx)
            return FilterChain(name=name, destination_prefixes=prefixes, **fields)
        if type_name in REFUSED:
            raise FieldError(f"filters[{i}]", f"{f.name}: not supported, and skipping it would "
                                              "bypass what it enforces")
        seen.append(f.name or type_name or "?")
        ctx.note(f"filters[{i}]", f"{f.name or type_name} skipped")
    raise FieldError("filters", f"no filter nodemesh can serve (saw: {', '.join(seen) or 'none'})")


def is_plaintext(transport_socket) -> bool:
    """raw_buffer, by typed_config or by name."""
    if transport_socket.HasField("typed_config"):
        return filter_type(transport_socket) == RAW_BUFFER
    return transport_socket.name in ("", "envoy.transport_sockets.raw_buffer", "raw_buffer")


def _note_ignored_after(fc, index: int, ctx: Context) -> None:
    for j in range(index + 1, len(fc.filters)):
        ctx.note(f"filters[{j}]", f"{fc.filters[j].name} after the terminal filter ignored")
