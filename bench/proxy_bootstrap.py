"""Envoy v3 bootstrap pieces for the proxy benchmarks: listeners in the shapes nodemesh
reads (Aeraki MetaProtocolProxy, HTTP connection manager, tcp_proxy) and STATIC
clusters, as YAML list items indented for `static_resources`."""

from __future__ import annotations

import textwrap

from bench.proxy_common import HOST


def cluster_yaml(name: str, port: int, host: str = HOST) -> str:
    return textwrap.indent(textwrap.dedent(f"""\
        - name: {name}
          type: STATIC
          connect_timeout: 1s
          load_assignment:
            cluster_name: {name}
            endpoints:
            - lb_endpoints:
              - endpoint: {{address: {{socket_address: {{address: {host}, port_value: {port}}}}}}}
        """), "  ")


def meta_listener_yaml(name: str, vip: str, port: int, codec: str, routes: str) -> str:
    """An Aeraki MetaProtocolProxy listener; routes: YAML list items at column 0."""
    body = textwrap.dedent(f"""\
        - name: {name}
          address: {{socket_address: {{address: {vip}, port_value: {port}}}}}
          filter_chains:
          - filters:
            - name: envoy.filters.network.meta_protocol_proxy
              typed_config:
                "@type": type.googleapis.com/aeraki.meta_protocol_proxy.v1alpha.MetaProtocolProxy
                stat_prefix: {name}
                application_protocol: {codec}
                codec: {{name: aeraki.meta_protocol.codec.{codec}}}
                route_config:
                  name: {name}-routes
                  routes:
        """)
    return textwrap.indent(body + textwrap.indent(routes, " " * 10), "  ")


def http_listener_yaml(name: str, vip: str, port: int, cluster: str) -> str:
    return textwrap.indent(textwrap.dedent(f"""\
        - name: {name}
          address: {{socket_address: {{address: {vip}, port_value: {port}}}}}
          filter_chains:
          - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: {name}
                codec_type: HTTP1
                http_filters:
                - name: envoy.filters.http.router
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
                route_config:
                  name: {name}-routes
                  virtual_hosts:
                  - name: all
                    domains: ["*"]
                    routes:
                    - name: all
                      match: {{prefix: /}}
                      route: {{cluster: {cluster}}}
        """), "  ")


def tcp_listener_yaml(name: str, vip: str, port: int, cluster: str) -> str:
    return textwrap.indent(textwrap.dedent(f"""\
        - name: {name}
          address: {{socket_address: {{address: {vip}, port_value: {port}}}}}
          filter_chains:
          - filters:
            - name: envoy.filters.network.tcp_proxy
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
                stat_prefix: {name}
                cluster: {cluster}
        """), "  ")
