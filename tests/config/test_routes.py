"""Route configurations (Envoy HTTP, Aeraki MetaProtocol, Aeraki's HTTP-RDS encoding)."""

import re

import pytest

from agent.config import resources as R
from agent.config.model import MirrorPolicy, Mutation

from .helpers import compiled, refused

FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
RL = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"


def http(routes: str, domains: str = '["*"]', extra_vh: str = "", extra: str = ""):
    body = "\n".join("    " + line for line in routes.strip("\n").splitlines())
    vh = "\n".join("  " + line for line in extra_vh.strip("\n").splitlines()) if extra_vh else ""
    return (f"name: rc\n{extra}virtual_hosts:\n- name: vh\n  domains: {domains}\n{vh}\n"
            f"  routes:\n{body}\n")


def table(text, **kw):
    return compiled(R.ROUTE, text, **kw)


# --- matching ----------------------------------------------------------------------------


def test_path_rules():
    t = table(http("""
- {name: exact, match: {path: /health}, route: {cluster: a}}
- {name: regex, match: {safe_regex: {regex: "/v[0-9]+/items"}}, route: {cluster: b}}
- {name: sep, match: {path_separated_prefix: /docs}, route: {cluster: c}}
- {name: nocase, match: {prefix: /API, case_sensitive: false}, route: {cluster: d}}
- {name: pre, match: {prefix: /static/}, route: {cluster: e}}
- {name: all, match: {prefix: /}, route: {cluster: f}}
"""))
    pick = lambda path: t.select({":path": path}).name   # noqa: E731
    assert pick("/health") == "exact" and pick("/health?x=1") == "exact"
    assert pick("/healthz") == "all"
    assert pick("/v2/items") == "regex" and pick("/v2/items?page=3") == "regex"
    assert pick("/v2/items/9") == "all"
    assert pick("/docs") == "sep" and pick("/docs/a") == "sep" and pick("/docs?q") == "sep"
    assert pick("/docsets") == "all"
    assert pick("/api/x") == "nocase"
    assert pick("/static/x.css") == "pre"
    assert t.routes[-1].match == ()                 # prefix "/" needs no matcher
    assert t.select({}).name == "all"              # frames without :path reach the catch-all


def test_header_matchers_every_kind():
    t = table(http("""
- name: r
  match:
    prefix: /
    headers:
    - {name: X-Exact, exact_match: a}
    - {name: x-prefix, prefix_match: pre}
    - {name: x-suffix, suffix_match: suf}
    - {name: x-contains, contains_match: mid}
    - {name: x-regex, safe_regex_match: {regex: "[0-9]{3}"}}
    - {name: x-present, present_match: true}
    - {name: x-absent, present_match: false}
    - {name: x-not, string_match: {exact: bad}, invert_match: true}
    - {name: x-case, string_match: {exact: MiXeD, ignore_case: true}}
    - {name: x-bare}
    - {name: ":method", exact_match: GET}
  route: {cluster: c}
"""))
    (route, stop) = t.routes
    good = {"x-exact": "a", "x-prefix": "prefix", "x-suffix": "the-suf", "x-contains": "amidb",
            "x-regex": "123", "x-present": "", "x-case": "mixed", "x-bare": "1", ":method": "GET"}
    assert route.matches(good)
    assert [m.key for m in route.match][0] == "x-exact"          # header names lower-cased
    for key, value in [("x-exact", "b"), ("x-prefix", "nope"), ("x-suffix", "sufx"),
                       ("x-contains", "zzz"), ("x-regex", "1234"), ("x-case", "other"),
                       (":method", "POST")]:
        assert not route.matches({**good, key: value}), key
    for key in ("x-present", "x-bare", "x-exact"):
        assert not route.matches({k: v for k, v in good.items() if k != key}), key
    assert not route.matches({**good, "x-absent": "1"})
    assert not route.matches({**good, "x-not": "bad"}) and route.matches({**good, "x-not": "ok"})
    assert stop.clusters == ()                       # the vhost does not fall through


def test_virtual_hosts_follow_envoys_domain_order_and_do_not_fall_through():
    t = table("""
        name: rc
        virtual_hosts:
        - name: any
          domains: ["*"]
          routes: [{match: {prefix: /}, route: {cluster: default}}]
        - name: prefix-wild
          domains: ["api.*"]
          routes: [{match: {prefix: /}, route: {cluster: api-any}}]
        - name: suffix-wild
          domains: ["*.example.com"]
          routes: [{match: {prefix: /}, route: {cluster: example}}]
        - name: exact
          domains: ["api.example.com", "api.example.com:8080"]
          routes: [{match: {prefix: /only}, route: {cluster: exact}}]
    """)
    pick = lambda host, path="/": (t.select({":authority": host, ":path": path}) or  # noqa
                                   type("none", (), {"clusters": [type("c", (), {
                                       "name": None})]})).clusters[0].name
    assert pick("api.example.com", "/only/x") == "exact"
    assert pick("API.Example.com:8080", "/only") == "exact"      # domains match any case
    assert pick("api.example.com", "/other") is None             # matched vhost: no route
    assert pick("www.example.com") == "example"
    assert pick(".example.com") == "default"                      # wildcard needs a label
    assert pick("api.other.org") == "api-any"
    assert pick("elsewhere") == "default"
    names = [r.name for r in t.routes]
    assert names == ["exact/0", "exact/(no route)", "suffix-wild/0", "prefix-wild/0", "any/0"]


def test_domain_errors():
    refused(R.ROUTE, """
        name: rc
        virtual_hosts:
        - {name: a, domains: [x.com], routes: []}
        - {name: b, domains: [X.com], routes: []}
    """, "virtual_hosts[1].domains[0]", "also in virtual host 'a'")
    refused(R.ROUTE, "name: rc\nvirtual_hosts: [{name: a, domains: [], routes: []}]",
            "virtual_hosts[0].domains", "must not be empty")
    refused(R.ROUTE, "name: rc\nvirtual_hosts: [{name: a, domains: ['a*b'], routes: []}]",
            "virtual_hosts[0].domains[0]", "bad domain")


def test_aeraki_http_rds_encoding_dummy_vhost():
    t = table("""
        name: outbound|20880||org.apache.dubbo.samples.basic.api.demoservice
        virtual_hosts:
        - name: dummy
          domains: ["*"]
          routes:
          - match:
              prefix: /
              headers:
              - {name: interface, exact_match: org.apache.dubbo.samples.basic.api.DemoService}
              - {name: method, exact_match: sayHello}
            route:
              weighted_clusters:
                clusters: [{name: v1, weight: 80}, {name: v2, weight: 20}]
              hash_policy: [{header: {header_name: interface}}]
              request_mirror_policies: [{cluster: shadow}]
            request_headers_to_add:
            - {header: {key: x-version, value: v2}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
            metadata:
              filter_metadata:
                nodemesh: {rate_limit: {max_tokens: 5, fill_interval: 1s, per_source_pod: true}}
          - match: {prefix: /}
            route: {cluster: v1}
    """)
    hit = t.select({"interface": "org.apache.dubbo.samples.basic.api.DemoService",
                    "method": "sayHello"})
    assert [(c.name, c.weight) for c in hit.clusters] == [("v1", 80), ("v2", 20)]
    assert hit.hash_keys == ("interface",)
    assert hit.mirrors == (MirrorPolicy("shadow", 100.0),)
    assert hit.request_mutations == (Mutation("x-version", "v2", False),)
    assert hit.rate_limit.per_source_pod and hit.rate_limit.max_tokens == 5
    assert t.select({"interface": "x", "method": "y"}).clusters[0].name == "v1"
    assert all(not r.any_of for r in t.routes)


# --- actions and policies -----------------------------------------------------------------


def test_route_action_fields():
    t = table(http("""
- name: r
  match: {prefix: /}
  route:
    cluster: c
    timeout: 2.5s
    idle_timeout: 30s
    retry_policy:
      retry_on: "5xx,connect-failure,refused-stream,reset"
      num_retries: 4
      per_try_timeout: 0.5s
    request_mirror_policies:
    - {cluster: m1, runtime_fraction: {default_value: {numerator: 25, denominator: HUNDRED}}}
    - {cluster: m2, runtime_fraction: {default_value: {numerator: 5000, denominator: TEN_THOUSAND}}}
    hash_policy:
    - header: {header_name: X-User}
    - connection_properties: {source_ip: true}
  request_headers_to_add:
  - header: {key: X-A, value: "1"}
  - header: {key: x-b, value: "2"}
    append_action: OVERWRITE_IF_EXISTS_OR_ADD
  response_headers_to_add:
  - header: {key: x-served, value: nm}
"""), notes=(notes := []))
    r = t.routes[0]
    assert r.timeout == 2.5 and r.idle_timeout == 30.0
    assert r.retry.num_retries == 4 and r.retry.per_try_timeout == 0.5
    assert r.retry.retry_on == ("5xx", "connect-failure", "reset")
    assert any("refused-stream" in n for n in notes)
    assert r.mirrors == (MirrorPolicy("m1", 25.0), MirrorPolicy("m2", 50.0))
    assert r.hash_keys == ("x-user",)
    assert any("connection_properties hash policy" in n for n in notes)
    assert r.request_mutations == (Mutation("x-a", "1", True), Mutation("x-b", "2", False))
    assert r.response_mutations == (Mutation("x-served", "nm", True),)


def test_zero_timeout_means_default_and_vhost_defaults_apply():
    t = table(http("""
- {name: r, match: {prefix: /a}, route: {cluster: c, timeout: 0s}}
- name: own
  match: {prefix: /}
  route: {cluster: c, retry_policy: {retry_on: reset, num_retries: 1}}
""", extra_vh="""
retry_policy: {retry_on: connect-failure, num_retries: 7}
request_headers_to_add: [{header: {key: x-vh, value: v}}]
request_mirror_policies: [{cluster: vh-mirror}]
""", extra="request_headers_to_add: [{header: {key: x-rc, value: r}}]\n"))
    first, own = t.routes
    assert first.timeout is None
    assert first.retry.num_retries == 7 and own.retry.num_retries == 1
    assert [m.key for m in first.request_mutations] == ["x-vh", "x-rc"]
    assert first.mirrors == (MirrorPolicy("vh-mirror", 100.0),)


def test_per_route_fault_and_rate_limit_filters():
    t = table(http(f"""
- name: r
  match: {{prefix: /}}
  route: {{cluster: c}}
  typed_per_filter_config:
    envoy.filters.http.fault:
      '@type': {FAULT}
      delay: {{fixed_delay: 0.2s, percentage: {{numerator: 10}}}}
      abort: {{http_status: 503, percentage: {{numerator: 5}}}}
    envoy.filters.http.local_ratelimit:
      '@type': {RL}
      stat_prefix: x
      token_bucket: {{max_tokens: 10, tokens_per_fill: 2, fill_interval: 1s}}
      filter_enabled: {{default_value: {{numerator: 100}}}}
      filter_enforced: {{default_value: {{numerator: 100}}}}
"""))
    r = t.routes[0]
    assert (r.fault.delay, r.fault.delay_percent, r.fault.abort_status, r.fault.abort_percent) \
        == (0.2, 10.0, 503, 5.0)
    assert (r.rate_limit.max_tokens, r.rate_limit.tokens_per_fill, r.rate_limit.fill_interval,
            r.rate_limit.per_source_pod) == (10, 2, 1.0, False)


def test_rate_limit_off_unless_enabled_and_enforced():
    notes = []
    t = table(http(f"""
- name: r
  match: {{prefix: /}}
  route: {{cluster: c}}
  typed_per_filter_config:
    envoy.filters.http.local_ratelimit:
      '@type': {RL}
      stat_prefix: x
      token_bucket: {{max_tokens: 10, fill_interval: 1s}}
"""), notes=notes)
    assert t.routes[0].rate_limit is None
    assert any("not enforced" in n for n in notes)


def test_filter_config_wrapper_and_disabled():
    t = table(http(f"""
- name: r
  match: {{prefix: /}}
  route: {{cluster: c}}
  typed_per_filter_config:
    envoy.filters.http.fault:
      '@type': type.googleapis.com/envoy.config.route.v3.FilterConfig
      config:
        '@type': {FAULT}
        abort: {{http_status: 500, percentage: {{numerator: 100}}}}
- name: "off"
  match: {{prefix: /}}
  route: {{cluster: c}}
  typed_per_filter_config:
    envoy.filters.http.fault:
      '@type': type.googleapis.com/envoy.config.route.v3.FilterConfig
      disabled: true
"""))
    assert t.routes[0].fault.abort_status == 500
    assert t.routes[1].fault is None


def test_nodemesh_route_metadata():
    t = table(http("""
- name: r
  match: {prefix: /}
  route: {cluster: c, timeout: 9s}
  metadata:
    filter_metadata:
      nodemesh:
        timeout: 250ms
        idle_timeout: 2m
        retry: {num_retries: 3, retry_on: [error, timeout], per_try_timeout: 1,
                idempotent_methods: [sayHello], budget_percent: 25, min_retry_concurrency: 2}
        fault: {delay: 10ms, delay_percent: 50, abort_status: 70, abort_percent: 1.5}
        rate_limit: {max_tokens: 100, tokens_per_fill: 10, fill_interval: 100ms,
                     per_source_pod: true}
"""))
    r = t.routes[0]
    assert r.timeout == 0.25 and r.idle_timeout == 120.0
    assert (r.retry.num_retries, r.retry.retry_on, r.retry.per_try_timeout,
            r.retry.idempotent_methods, r.retry.budget_percent, r.retry.min_retry_concurrency) \
        == (3, ("error", "timeout"), 1.0, ("sayHello",), 25.0, 2)
    assert (r.fault.delay, r.fault.delay_percent, r.fault.abort_status, r.fault.abort_percent) \
        == (0.01, 50.0, 70, 1.5)
    assert (r.rate_limit.max_tokens, r.rate_limit.fill_interval, r.rate_limit.per_source_pod) \
        == (100, 0.1, True)


@pytest.mark.parametrize("section,field,reason", [
    ("{timeout: soon}", "nodemesh.timeout", "expected a duration"),
    ("{retry: {retry_on: [bogus]}}", "nodemesh.retry.retry_on", "unknown condition 'bogus'"),
    ("{retry: {num_retries: -1}}", "nodemesh.retry.num_retries", "out of range"),
    ("{fault: {delay_percent: 5}}", "nodemesh.fault", "set delay and/or abort_status"),
    ("{fault: {delay: 1s, delay_percent: 150}}", "nodemesh.fault.delay_percent", "percentage"),
    ("{rate_limit: {max_tokens: 5}}", "nodemesh.rate_limit", "fill_interval are required"),
    ("{rate_limit: {per_source_pod: yes-please}}", "nodemesh.rate_limit.per_source_pod",
     "true or false"),
    ("{retries: 3}", "filter_metadata.nodemesh", "unknown key retries"),
])
def test_nodemesh_metadata_errors(section, field, reason):
    refused(R.ROUTE, http(f"""
- name: r
  match: {{prefix: /}}
  route: {{cluster: c}}
  metadata: {{filter_metadata: {{nodemesh: {section}}}}}
"""), field, reason)


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("route,field,reason", [
    ("{match: {prefix: /}, route: {weighted_clusters: {clusters: [{name: a, weight: 0}]}}}",
     "route.weighted_clusters.clusters", "weights sum to 0"),
    ("{match: {prefix: /}, route: {weighted_clusters: {clusters: []}}}",
     "weighted_clusters.clusters", "must not be empty"),
    ("{match: {prefix: /}, route: {timeout: 1s}}", "route.cluster",
     "needs a cluster or weighted_clusters"),
    ("{match: {prefix: /}, route: {cluster_header: x-cluster}}", "route.cluster_header",
     "not supported"),
    ("{match: {prefix: /}, redirect: {path_redirect: /x}}", "redirect", "unsupported action"),
    ("{match: {safe_regex: {regex: '(unclosed'}}, route: {cluster: c}}",
     "match.safe_regex.regex", "bad regex"),
    ("{match: {prefix: /, headers: [{name: x, safe_regex_match: {regex: '[z-a]'}}]}, "
     "route: {cluster: c}}", "match.headers[0].safe_regex_match.regex", "bad regex"),
    ("{match: {prefix: /, headers: [{name: x, range_match: {start: 1, end: 2}}]}, "
     "route: {cluster: c}}", "match.headers[0].range_match", "not supported"),
    ("{match: {prefix: /, query_parameters: [{name: q}]}, route: {cluster: c}}",
     "match.query_parameters", "not supported"),
    ("{match: {prefix: /}, route: {cluster: c, prefix_rewrite: /v2}}", "route.prefix_rewrite",
     "not supported"),
    ("{match: {connect_matcher: {}}, route: {cluster: c}}", "match.connect_matcher",
     "not supported"),
    ("{match: {prefix: /}, route: {cluster: c}, request_headers_to_add: "
     "[{header: {key: a, value: b}, append_action: ADD_IF_ABSENT}]}",
     "request_headers_to_add[0].append_action", "only APPEND_IF_EXISTS_OR_ADD"),
])
def test_route_errors_name_the_field(route, field, reason):
    err = refused(R.ROUTE, http(f"- {route}"), field, reason)
    assert err.field.startswith("virtual_hosts[0].routes[0]")


def test_regex_length_limit():
    from agent.config.context import Limits

    long = "a" * 50
    refused(R.ROUTE, http(f"- {{match: {{safe_regex: {{regex: '{long}'}}}}, route: {{cluster: c}}}}"),
            "match.safe_regex.regex", "longer than 40", limits=Limits(max_regex_length=40))


def test_direct_response_is_a_stop():
    notes = []
    t = table(http("- {name: blackhole, match: {prefix: /}, direct_response: {status: 502}}"),
              notes=notes)
    assert t.routes[0].clusters == () and t.select({":path": "/"}) is None
    assert any("direct_response" in n for n in notes)


# --- Aeraki MetaProtocol RouteConfiguration ------------------------------------------------


def test_meta_route_configuration():
    t = compiled(R.META_ROUTE, """
        name: outbound|20880||demo
        routes:
        - name: v2-by-version
          match:
            metadata:
            - {name: interface, exact_match: org.apache.dubbo.demo.Greeter}
            - {name: version, safe_regex_match: {regex: "2\\\\..*"}}
          route:
            weighted_clusters: {clusters: [{name: demo-v2, weight: 1}]}
            hash_policy: [interface, method]
            request_mirror_policies:
            - {cluster: demo-shadow, runtime_fraction: {default_value: {numerator: 30}}}
          request_mutation: [{key: foo, value: bar}]
          response_mutation: [{key: served, value: nodemesh}]
          metadata:
            filter_metadata:
              nodemesh: {timeout: 1s, retry: {num_retries: 2}, fault: {abort_status: 70}}
        - name: default
          route: {cluster: demo}
    """, version="rds-7")
    assert t.name == "outbound|20880||demo" and t.version == "rds-7"
    first, default = t.routes
    assert first.matches({"interface": "org.apache.dubbo.demo.Greeter", "version": "2.1"})
    assert not first.matches({"interface": "org.apache.dubbo.demo.Greeter", "version": "1.0"})
    assert first.clusters[0].name == "demo-v2" and first.hash_keys == ("interface", "method")
    assert first.mirrors == (MirrorPolicy("demo-shadow", 30.0),)
    assert first.request_mutations == (Mutation("foo", "bar"),)
    assert first.response_mutations == (Mutation("served", "nodemesh"),)
    assert first.timeout == 1.0 and first.retry.num_retries == 2
    assert first.fault.abort_status == 70 and first.fault.abort_percent == 100.0
    assert default.match == () and default.clusters[0].name == "demo"
    assert t.select({"interface": "other"}) is default


@pytest.mark.parametrize("routes,field,reason", [
    ("[{name: r}]", "routes[0].route", "missing cluster action"),
    ("[{route: {hash_policy: [x]}}]", "routes[0].route.cluster", "needs a cluster"),
    ("[{route: {cluster: c, hash_policy: ['']}}]", "routes[0].route.hash_policy", "empty"),
    ("[{route: {cluster: c}, request_mutation: [{key: '', value: v}]}]",
     "routes[0].request_mutation[0].key", "must not be empty"),
    ("[{route: {cluster: c}, match: {metadata: [{name: m, safe_regex_match: {regex: '*'}}]}}]",
     "routes[0].match.metadata[0].safe_regex_match.regex", "bad regex"),
    ("[{route: {cluster: c, request_mirror_policies: [{cluster: ''}]}}]",
     "routes[0].route.request_mirror_policies[0].cluster", "must not be empty"),
])
def test_meta_route_errors(routes, field, reason):
    refused(R.META_ROUTE, f"name: r\nroutes: {routes}\n", field, reason)


def test_meta_route_name_required():
    refused(R.META_ROUTE, "routes: []", "name", "must not be empty")


def test_regexes_are_compiled_once():
    t = compiled(R.META_ROUTE, """
        name: r
        routes: [{route: {cluster: c}, match: {metadata: [{name: m, safe_regex_match: {regex: 'a.c'}}]}}]
    """)
    m = t.routes[0].match[0].match
    assert isinstance(m.regex, re.Pattern) and m.matches("abc") and not m.matches("abcd")
