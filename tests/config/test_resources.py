"""resources.decode / resource_name / to_dict, Envoy JSON leniencies, errors' text."""

import json

import pytest
from google.protobuf import any_pb2, struct_pb2

from agent.config import jsonpb
from agent.config import resources as R
from agent.config.errors import ConfigError, ConfigErrors
from agent.config.protos.aeraki import meta_protocol_proxy_pb2, route_pb2

from .helpers import META, data

CLUSTER = {"name": "c1", "type": "STATIC", "connect_timeout": "2s"}


def test_type_urls_and_names():
    assert R.LISTENER.endswith("envoy.config.listener.v3.Listener")
    assert R.ROUTE.endswith("envoy.config.route.v3.RouteConfiguration")
    assert R.CLUSTER.endswith("envoy.config.cluster.v3.Cluster")
    assert R.ENDPOINT.endswith("envoy.config.endpoint.v3.ClusterLoadAssignment")
    assert R.META_ROUTE == ("type.googleapis.com/aeraki.meta_protocol_proxy.config.route."
                            "v1alpha.RouteConfiguration")
    assert R.TYPE_NAMES == {R.LISTENER: "listener", R.ROUTE: "route", R.CLUSTER: "cluster",
                            R.ENDPOINT: "endpoint", R.META_ROUTE: "meta_route"}


def test_decode_every_input_form():
    from_dict = R.decode(R.CLUSTER, CLUSTER)
    assert from_dict.name == "c1" and from_dict.connect_timeout.seconds == 2
    packed = any_pb2.Any()
    packed.Pack(from_dict)
    assert R.decode(R.CLUSTER, packed) == from_dict
    assert R.decode(R.CLUSTER, from_dict.SerializeToString()) == from_dict
    assert R.decode(R.CLUSTER, memoryview(from_dict.SerializeToString())) == from_dict
    assert R.decode(R.CLUSTER, json.dumps(CLUSTER)) == from_dict
    assert R.decode(R.CLUSTER, "name: c1\ntype: STATIC\nconnect_timeout: 2s\n") == from_dict
    assert R.decode(R.CLUSTER, from_dict) is from_dict
    # a dict carrying its own @type (as in a config dump) is accepted
    assert R.decode(R.CLUSTER, {"@type": R.CLUSTER, **CLUSTER}) == from_dict


def test_decode_camel_case_and_aeraki_route():
    rc = R.decode(R.META_ROUTE, {"name": "r", "routes": [
        {"name": "a", "match": {"metadata": [{"name": "method", "exactMatch": "x"}]},
         "route": {"cluster": "c", "hashPolicy": ["method"]},
         "requestMutation": [{"key": "k", "value": "v"}]}]})
    assert isinstance(rc, route_pb2.RouteConfiguration)
    assert rc.routes[0].route.hash_policy == ["method"]
    assert rc.routes[0].request_mutation[0].key == "k"
    assert R.resource_name(rc) == "r"


def test_decode_errors_name_the_resource():
    with pytest.raises(ConfigError) as info:
        R.decode(R.CLUSTER, {"name": "c1", "no_such_field": 1})
    assert info.value.resource == "c1" and "no_such_field" in info.value.reason
    with pytest.raises(ConfigError, match="undecodable"):
        R.decode(R.CLUSTER, b"\xff\xff\xff")
    wrong = any_pb2.Any()
    wrong.Pack(route_pb2.RouteConfiguration(name="x"))
    with pytest.raises(ConfigError, match="resource is a"):
        R.decode(R.CLUSTER, wrong)
    with pytest.raises(ConfigError, match="unknown resource type"):
        R.decode("type.googleapis.com/no.such.Type", {})
    with pytest.raises(ConfigError, match="neither JSON nor YAML"):
        R.decode(R.CLUSTER, "name: [unclosed")


def test_single_object_for_repeated_field_as_envoy_reads_it():
    # Aeraki's sample bootstraps write `listeners:` and `clusters:` as one mapping.
    b = R.decode(R.BOOTSTRAP, data("""
        static_resources:
          clusters: {name: only, type: STATIC}
          listeners:
            name: l
            address: {socket_address: {address: 0.0.0.0, port_value: 1}}
    """))
    assert [c.name for c in b.static_resources.clusters] == ["only"]
    assert [x.name for x in b.static_resources.listeners] == ["l"]


def test_unknown_any_type_parses_into_a_placeholder():
    lst = R.decode(R.LISTENER, data("""
        name: l
        address: {socket_address: {address: 1.2.3.4, port_value: 80}}
        filter_chains:
        - filters:
          - name: istio.stats
            typed_config:
              '@type': type.googleapis.com/stats.PluginConfig
              disable_host_header_fallback: true
    """))
    f = lst.filter_chains[0].filters[0]
    assert f.typed_config.type_url == jsonpb.UNRESOLVED
    assert jsonpb.any_type_url(f.typed_config) == "type.googleapis.com/stats.PluginConfig"
    assert jsonpb.unpack_any(f.typed_config) is None
    shown = R.to_dict(lst)["filter_chains"][0]["filters"][0]["typed_config"]
    assert shown["type_url"] == "type.googleapis.com/stats.PluginConfig"
    assert shown["value"] == {"disable_host_header_fallback": True}


def test_to_dict_survives_unknown_binary_any():
    lst = R.decode(R.LISTENER, {"name": "l"})
    f = lst.filter_chains.add().filters.add(name="x")
    f.typed_config.type_url = "type.googleapis.com/vendor.Secret"
    f.typed_config.value = b"\x08\x01"
    out = R.to_dict(lst)["filter_chains"][0]["filters"][0]["typed_config"]
    assert out["type_url"] == "type.googleapis.com/vendor.Secret"
    assert out["value"] == {"@bytes": "CAE="}


def test_envoy_types_load_on_first_use():
    # Not preloaded: resolved by importing its package when first seen.
    cls = jsonpb.message_class("type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors")
    assert cls is not None and cls.DESCRIPTOR.full_name.endswith("Cors")
    assert jsonpb.message_class("type.googleapis.com/acme.Unknown") is None


def test_aeraki_types_register_for_any_and_json():
    mp = meta_protocol_proxy_pb2.MetaProtocolProxy(stat_prefix="s", application_protocol="dubbo")
    mp.rds.route_config_name = "r"
    packed = any_pb2.Any()
    packed.Pack(mp)
    assert packed.type_url == META
    assert jsonpb.unpack_any(packed) == mp
    opts = struct_pb2.Struct()
    opts.update({"max_frame_size": 1024})
    mp.codec.config.Pack(opts)
    shown = R.to_dict(mp)
    assert shown["codec"]["config"]["@type"].endswith("google.protobuf.Struct")
    assert R.decode(R.META_ROUTE, {"name": "x"}).name == "x"


def test_resource_name_and_type_url_of():
    cla = R.decode(R.ENDPOINT, {"cluster_name": "eds-a"})
    assert R.resource_name(cla) == "eds-a"
    assert R.type_url_of(cla) == R.ENDPOINT


def test_config_error_text_names_type_resource_and_field():
    err = ConfigError(R.CLUSTER, "outbound|6379||redis.default.svc", "lb_policy",
                      "unsupported policy CLUSTER_PROVIDED")
    assert str(err) == ('cluster "outbound|6379||redis.default.svc": lb_policy: '
                        'unsupported policy CLUSTER_PROVIDED')
    assert (err.type_url, err.resource, err.field) == (R.CLUSTER, "outbound|6379||redis."
                                                       "default.svc", "lb_policy")
    assert str(ConfigError(R.META_ROUTE, "r", "", "bad")) == 'meta_route "r": bad'
    many = ConfigErrors([err, ConfigError(R.LISTENER, "l", "name", "x")])
    assert str(many).startswith("2 configuration errors") and 'listener "l"' in str(many)


def test_yaml_is_read_with_yaml_1_2_booleans():
    from agent.config.jsonpb import load_yaml

    assert load_yaml("a: off\nb: yes\nc: on\nd: true\ne: False\n") == \
        {"a": "off", "b": "yes", "c": "on", "d": True, "e": False}
    rc = R.decode(R.META_ROUTE, "name: off\nroutes: [{name: no, route: {cluster: on}}]")
    assert (rc.name, rc.routes[0].name, rc.routes[0].route.cluster) == ("off", "no", "on")
