"""The compiled route selector gives RouteTable.select's answer, on any table."""

import re

import pytest
from hypothesis import given, settings, strategies as st

from agent.config.model import MetadataMatch, Route, RouteTable, StringMatch, WeightedCluster
from agent.proxy.route_select import Selector

KEYS = ("interface", "method", ":path", "command")
VALUES = ("", "a", "ab", "abc", "AB", "b", "ba", "x.y")
TO = (WeightedCluster("c", 1),)


def matcher(key, kind, value, ignore_case=False, invert=False):
    rx = re.compile(re.escape(value) + ".*") if kind == "regex" else None
    return MetadataMatch(key, StringMatch(kind, value, ignore_case, invert, rx))


matchers = st.builds(matcher, st.sampled_from(KEYS),
                     st.sampled_from(("exact", "prefix", "suffix", "contains", "regex",
                                      "present")),
                     st.sampled_from(VALUES), st.booleans(), st.booleans())
exact_matchers = st.builds(matcher, st.just("method"), st.just("exact"), st.sampled_from(VALUES))


def routes_of(match_strategy, max_matchers):
    route = st.builds(lambda i, m, any_of, stop: Route(f"r{i}", tuple(m), () if stop else TO,
                                                       any_of=tuple(any_of)),
                      st.integers(0, 99), st.lists(match_strategy, max_size=max_matchers),
                      st.lists(match_strategy, max_size=1), st.booleans())
    return st.lists(route, max_size=6)


metadata = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES + ("abcd", "zzz")))


def check(routes, samples, **limits):
    table = RouteTable("t", "1", tuple(routes))
    sel = Selector(table, lambda r: r, **limits)
    for md in samples + samples:              # twice: the second time from the cache
        assert sel.select(md) is table.select(md), (routes, md)


@settings(max_examples=300, deadline=None)
@given(routes_of(matchers, 2), st.lists(metadata, max_size=8))
def test_any_table_same_as_reference(routes, samples):
    check(routes, samples)


@settings(max_examples=200, deadline=None)
@given(routes_of(exact_matchers, 1), st.lists(metadata, max_size=8))
def test_exact_tables_same_as_reference(routes, samples):
    check(routes, samples)


@settings(max_examples=100, deadline=None)
@given(routes_of(matchers, 2), st.lists(metadata, max_size=12))
def test_tiny_cache_same_as_reference(routes, samples):
    check(routes, samples, cache_entries=2, max_cached_chars=3)


def test_exact_table_is_a_dict_lookup():
    routes = [Route("get", (matcher("command", "exact", "GET"),), TO),
              Route("set", (matcher("command", "exact", "SET"),), TO),
              Route("dup", (matcher("command", "exact", "GET"),), ()),
              Route("rest", (), TO), Route("never", (matcher("command", "exact", "DEL"),), TO)]
    sel = Selector(RouteTable("t", "1", tuple(routes)), lambda r: r.name)
    assert sel._index == {"GET": "get", "SET": "set"}
    assert sel.select({"command": "GET"}) == "get"
    assert sel.select({"command": "DEL"}) == "rest"      # after the catch-all: unreachable
    assert sel.select({}) == "rest"


def test_cache_is_bounded_in_entries_and_value_length():
    routes = [Route("p", (matcher(":path", "prefix", "/api"),), TO), Route("rest", (), TO)]
    sel = Selector(RouteTable("t", "1", tuple(routes)), lambda r: r.name, cache_entries=4,
                   max_cached_chars=10)
    for i in range(20):
        assert sel.select({":path": f"/api/{i}"}) == "p"
        assert len(sel._cache) <= 4
    sel._cache.clear()
    assert sel.select({":path": "/api/" + "x" * 20}) == "p"
    assert not sel._cache                                 # too long to remember


def test_bad_limits_name_the_table():
    with pytest.raises(ValueError, match="'t'"):
        Selector(RouteTable("t", "1", ()), lambda r: r, cache_entries=-1)
