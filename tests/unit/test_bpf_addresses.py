"""Addresses as people write them <-> the datapath's keys and fields."""

import pytest

from agent.bpf import addresses, layout
from agent.bpf.datapath import DatapathError, _set_local, _set_remote, parse_hostport


@pytest.mark.parametrize("text,expected", [
    ("198.18.0.10:80", ("198.18.0.10", 80)),
    ("[fd00::10]:80", ("fd00::10", 80)),
    ("[FD00:0::10]:15001", ("fd00::10", 15001)),
    ("[::ffff:198.18.0.10]:80", ("198.18.0.10", 80)),   # IPv4-mapped is IPv4
])
def test_parse_hostport(text, expected):
    assert parse_hostport(text) == expected


@pytest.mark.parametrize("text,needle", [
    ("198.18.0:80", "not an IPv4 address"),
    ("198.18.0.10", "port not in 1-65535"),
    ("198.18.0.10:99999", "port not in 1-65535"),
    ("fd00::10", "[fd00::10]:80"),                      # a port needs brackets
    ("[fd00::10]80", "expected [IPv6]:PORT"),
    ("[fd00::zz]:80", "not an IPv4 address (like 198.18.0.10) or an IPv6 one"),
])
def test_parse_hostport_errors(text, needle):
    with pytest.raises(DatapathError, match=needle.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        parse_hostport(text)


def test_default_port_allows_bare_addresses():
    assert parse_hostport("fd00::2", 1) == ("fd00::2", 1)
    assert parse_hostport("[fd00::2]", 1) == ("fd00::2", 1)
    assert parse_hostport("127.0.0.2", 1) == ("127.0.0.2", 1)


def test_service_and_client_keys_pick_the_family_map():
    name, key = addresses.service_key("[fd00:6e6d:ffff::1]:80")
    assert name == "services6" and layout.words_to_ip6(key.vip6) == "fd00:6e6d:ffff::1"
    assert layout.be16_to_port(key.port) == 80
    assert addresses.service_vip(name, key) == "[fd00:6e6d:ffff::1]:80"
    name, key = addresses.service_key("[::ffff:198.18.10.1]:80")
    assert name == "services" and addresses.service_vip(name, key) == "198.18.10.1:80"
    assert addresses.client_key("::ffff:127.0.0.1", 4000)[0] == "accept_records"
    assert addresses.client_key("fd00::1", 4000)[0] == "accept_records6"


def test_orig_dst_text_by_family():
    rec = layout.new("struct nm_orig_dst", ip=layout.ip_to_be32("198.18.10.1"),
                     port=layout.port_to_be16(80))
    assert addresses.orig_dst_text(rec) == "198.18.10.1:80"
    rec.flags = layout.C.NM_ORIG_V6                      # a dual-stack socket, mapped VIP
    rec.ip6 = layout.ip6_to_words("::ffff:198.18.10.1")
    assert addresses.orig_dst_text(rec) == "198.18.10.1:80"
    rec.ip, rec.ip6 = 0, layout.ip6_to_words("fd00::1")
    assert addresses.orig_dst_text(rec) == "[fd00::1]:80"


def test_proxy_addresses_one_per_family_one_port():
    cfg = layout.new("struct nm_proxy_config")
    _set_local(cfg, "127.0.0.1:15001,[fd00::1]:15001")
    assert layout.be32_to_ip(cfg.local_ip) == "127.0.0.1"
    assert layout.words_to_ip6(cfg.local_ip6) == "fd00::1"
    assert layout.be16_to_port(cfg.local_port) == 15001
    _set_local(cfg, "[fd00::1]:15002")                   # replaces both families
    assert cfg.local_ip == 0 and layout.be16_to_port(cfg.local_port) == 15002
    with pytest.raises(DatapathError, match="one port for both"):
        _set_local(cfg, "127.0.0.1:1,[fd00::1]:2")
    with pytest.raises(DatapathError, match="one IPv4 and one IPv6"):
        _set_local(cfg, "127.0.0.1:1,127.0.0.2:1")
    _set_remote(cfg, "fd00::2,198.18.0.2")
    assert layout.be32_to_ip(cfg.remote_ip) == "198.18.0.2"
    assert layout.words_to_ip6(cfg.remote_ip6) == "fd00::2"
    _set_local(cfg, "")
    _set_remote(cfg, "")
    assert cfg.local_ip == cfg.remote_ip == cfg.local_port == 0
    assert layout.words_are_zero(cfg.local_ip6) and layout.words_are_zero(cfg.remote_ip6)
