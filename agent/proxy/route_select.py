"""Route selection compiled once per snapshot: RouteTable.select without the walk.

`RouteTable.select` (agent/config/model.py) is the reference: routes in
order, first match wins, every matcher re-reads its kind per request. A
worker selects a route for every routed request, so each chain's table is
compiled once into a `Selector`:

- exact table: every route before the first catch-all matches one key
  exactly (case-sensitive, not inverted) - a Redis command table, an Aeraki
  method table - becomes one dict lookup;
- anything else: the matchers are compiled to closures (the kind is decided
  once) and the result is cached by the values of the keys the table reads
  (the selection depends on nothing else), so repeated interface/method or
  host/path pairs cost one tuple and one dict lookup. The cache is bounded in
  entries and in value length (an HTTP path with a query string is rarely
  repeated and would only fill it).

Both give exactly RouteTable.select's answer (tests/proxy/test_route_select.py
checks them against it on generated tables).
"""

from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

from agent.config.model import MetadataMatch, Route, RouteTable, StringMatch

DEFAULT_CACHE_ENTRIES = 1024    # distinct value tuples remembered per chain
DEFAULT_MAX_CACHED_CHARS = 256  # longer values (summed over the keys) are not cached

_Pred = Callable[[Optional[str]], bool]


def compile_match(m: StringMatch) -> _Pred:
    """One StringMatch as a predicate on the metadata value (None when absent)."""
    base = _base(m)
    if m.invert:
        return lambda v: not base(v)
    return base


def _base(m: StringMatch) -> _Pred:
    kind = m.kind
    if kind == "present":
        return lambda v: v is not None
    if kind == "regex":
        rx = m.regex
        return lambda v: v is not None and rx.fullmatch(v) is not None
    want = m.value.lower() if m.ignore_case else m.value
    if m.ignore_case:
        ops = {"exact": lambda v: v is not None and v.lower() == want,
               "prefix": lambda v: v is not None and v.lower().startswith(want),
               "suffix": lambda v: v is not None and v.lower().endswith(want)}
        return ops.get(kind, lambda v: v is not None and want in v.lower())
    ops = {"exact": lambda v: v == want,           # None == str is False
           "prefix": lambda v: v is not None and v.startswith(want),
           "suffix": lambda v: v is not None and v.endswith(want)}
    return ops.get(kind, lambda v: v is not None and want in v)


def _checks(matches: Sequence[MetadataMatch]) -> Tuple[Tuple[str, _Pred], ...]:
    return tuple((m.key, compile_match(m.match)) for m in matches)


class Selector:
    """select(metadata) -> what the table selects, mapped through `result`
    (RouteTable.select's route, None for no route or a stop route)."""

    __slots__ = ("keys", "select", "_entries", "_index", "_default", "_cache", "_max_entries",
                 "_max_chars")

    def __init__(self, table: RouteTable, result: Callable[[Route], object],
                 cache_entries: int = DEFAULT_CACHE_ENTRIES,
                 max_cached_chars: int = DEFAULT_MAX_CACHED_CHARS):
        if cache_entries < 0 or max_cached_chars < 0:
            raise ValueError(f"route table {table.name!r}: cache limits must be >= 0")
        routes = table.routes
        self.keys = tuple(dict.fromkeys(m.key for r in routes for m in r.match + r.any_of))
        self._entries = tuple((_checks(r.match), _checks(r.any_of),
                               result(r) if r.clusters else None) for r in routes)
        self._cache: Dict[object, object] = {}
        self._max_entries = cache_entries
        self._max_chars = max_cached_chars
        self._index = self._default = None
        index = _exact_index(routes)
        if index is not None:
            key, values, default = index
            self._index = {v: result(r) if r.clusters else None for v, r in values.items()}
            self._default = result(default) if default is not None and default.clusters \
                else None
            self.select = self._select_exact(key)
        elif len(self.keys) == 1:
            self.select = self._select_one(self.keys[0])
        else:
            self.select = self._select_many

    # -- the three shapes --------------------------------------------------------------

    def _select_exact(self, key: str):
        get, default = self._index.get, self._default
        return lambda metadata: get(metadata.get(key), default)

    def _select_one(self, key: str):
        cache, walk = self._cache, self._walk

        def select(metadata: Mapping[str, str]):
            value = metadata.get(key)
            try:
                return cache[value]
            except KeyError:
                return self._remember(value, (value,), walk(metadata))
        return select

    def _select_many(self, metadata: Mapping[str, str]):
        get = metadata.get
        values = tuple([get(k) for k in self.keys])
        try:
            return self._cache[values]
        except KeyError:
            return self._remember(values, values, self._walk(metadata))

    # -- misses ------------------------------------------------------------------------

    def _walk(self, metadata: Mapping[str, str]):
        get = metadata.get
        for checks, any_of, result in self._entries:
            for key, pred in checks:
                if not pred(get(key)):
                    break
            else:
                if not any_of or any(pred(get(key)) for key, pred in any_of):
                    return result
        return None

    def _remember(self, cache_key, values, result):
        if sum(len(v) for v in values if v is not None) <= self._max_chars:
            if len(self._cache) >= self._max_entries:
                self._cache.clear()           # a new working set: start over, stay bounded
            if self._max_entries:
                self._cache[cache_key] = result
        return result


def _exact_index(routes: Sequence[Route]):
    """(key, {value: first route}, catch-all route or None) when every route before the
    first catch-all is one case-sensitive exact match on the same key; else None."""
    key, values = None, {}
    for route in routes:
        if route.any_of:
            return None
        if not route.match:
            return (key, values, route) if key is not None else None
        if len(route.match) != 1:
            return None
        m = route.match[0]
        sm = m.match
        if sm.kind != "exact" or sm.ignore_case or sm.invert or (key is not None and m.key != key):
            return None
        key = m.key
        values.setdefault(sm.value, route)
    return (key, values, None) if key is not None else None
