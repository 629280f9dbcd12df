"""Addresses as people write them <-> the datapath's map keys and fields.

IPv4 as 198.18.0.10, IPv6 as fd00::10 (with a port: [fd00::10]:80). An
IPv4-mapped IPv6 address (::ffff:198.18.0.10) is the IPv4 address: that is
how connect6 looks it up and how sockops keys its records.
"""

import ipaddress

from . import layout
from .errors import DatapathError


def parse_ip(text: str):
    """An IPv4Address or IPv6Address (IPv4-mapped ones as IPv4), or a clear error."""
    try:
        ip = ipaddress.ip_address(str(text).strip("[]"))
    except ValueError:
        raise DatapathError(f"{text!r} is not an IPv4 address (like 198.18.0.10) "
                            "or an IPv6 one (like fd00::10)") from None
    if ip.version == 6 and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def parse_hostport(text: str, default_port=None):
    """'198.18.0.10:80' -> ('198.18.0.10', 80); '[fd00::10]:80' -> ('fd00::10', 80).

    With default_port, the port may be left out ('198.18.0.10', 'fd00::10')."""
    text = str(text)
    if text.startswith("["):
        host, sep, port = text[1:].partition("]")
        if port.startswith(":"):
            port = port[1:]
        elif port == "" and default_port is not None:
            port = default_port
        else:
            raise DatapathError(f"{text!r}: expected [IPv6]:PORT like [fd00::10]:80")
    elif text.count(":") > 1:           # a bare IPv6 address
        if default_port is None:
            raise DatapathError(f"{text!r}: an IPv6 address with a port is written "
                                "[fd00::10]:80")
        host, port = text, default_port
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, default_port
        if host.count(".") != 3:
            raise DatapathError(f"{host!r} is not an IPv4 address (like 198.18.0.10)")
    ip = parse_ip(host)
    try:
        port = int(port)
        if not 0 < port < 65536:
            raise ValueError
    except (TypeError, ValueError):
        raise DatapathError(f"{text!r}: port not in 1-65535") from None
    return str(ip), port


def format_hostport(ip, port) -> str:
    ip = ipaddress.ip_address(str(ip))
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def service_key(vip_port: str):
    """('services' or 'services6', the cffi key) of 'VIP:PORT'."""
    ip, port = parse_hostport(vip_port)
    ip = ipaddress.ip_address(ip)
    if ip.version == 4:
        return "services", layout.new("struct nm_service_key", vip=layout.ip_to_be32(str(ip)),
                                      port=layout.port_to_be16(port))
    return "services6", layout.new("struct nm_service6_key", vip6=layout.ip6_to_words(str(ip)),
                                   port=layout.port_to_be16(port))


def client_key(ip: str, port: int):
    """('accept_records' or 'accept_records6', the cffi key) of a client address."""
    addr = parse_ip(ip)
    if addr.version == 4:
        return "accept_records", layout.new("struct nm_addr_key",
                                            ip=layout.ip_to_be32(str(addr)),
                                            port=layout.port_to_be16(port))
    return "accept_records6", layout.new("struct nm_addr6_key",
                                         ip6=layout.ip6_to_words(str(addr)),
                                         port=layout.port_to_be16(port))


def service_vip(map_name: str, key) -> str:
    if map_name == "services":
        return f"{layout.be32_to_ip(key.vip)}:{layout.be16_to_port(key.port)}"
    return f"[{layout.words_to_ip6(key.vip6)}]:{layout.be16_to_port(key.port)}"


def orig_dst_text(rec) -> str:
    """What a steered socket dialled, IPv4-mapped ones as their IPv4 address."""
    port = layout.be16_to_port(rec.port)
    if rec.flags & layout.C.NM_ORIG_V6 and rec.ip == 0:
        return f"[{layout.words_to_ip6(rec.ip6)}]:{port}"
    return f"{layout.be32_to_ip(rec.ip)}:{port}"
