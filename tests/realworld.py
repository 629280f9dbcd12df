"""Readers for ../shared/realworld (captures and fuzz seeds from other projects).

Tests that use them skip when the folder is absent; nothing from it is ever
copied into the project.
"""

import pathlib
import re
import socket

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2] / "shared" / "realworld"


def path(*parts) -> pathlib.Path:
    """A file under shared/realworld, or skip the test when it is not here."""
    p = ROOT.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not present (shared/realworld is optional outside CI)")
    return p


class Stream:
    """One TCP connection of a capture, each direction reassembled by sequence."""

    def __init__(self, client, server):
        self.client, self.server = client, server
        self._segments = {True: {}, False: {}}   # from_client -> {seq: payload}

    def add(self, from_client, seq, payload):
        if payload:
            self._segments[from_client].setdefault(seq, payload)

    def _join(self, from_client):
        segs = self._segments[from_client]
        out, next_seq = bytearray(), None
        for seq in sorted(segs):
            data = segs[seq]
            if next_seq is not None and seq < next_seq:   # retransmission overlap
                data = data[next_seq - seq:]
            out += data
            next_seq = max(next_seq or 0, seq + len(segs[seq]))
        return bytes(out)

    @property
    def c2s(self) -> bytes:
        return self._join(True)

    @property
    def s2c(self) -> bytes:
        return self._join(False)

    def __repr__(self):
        return f"Stream({self.client} -> {self.server})"


def _ip_packets(pcap_path):
    import dpkt

    with open(pcap_path, "rb") as fh:
        try:
            reader = dpkt.pcap.Reader(fh)
        except ValueError:
            fh.seek(0)
            reader = dpkt.pcapng.Reader(fh)
        link = reader.datalink()
        for _ts, raw in reader:
            if link == dpkt.pcap.DLT_LINUX_SLL:
                pkt = dpkt.sll.SLL(raw).data
            elif link in (dpkt.pcap.DLT_NULL, dpkt.pcap.DLT_LOOP):   # BSD loopback (Zeek's)
                raw = raw[4:]
                pkt = dpkt.ip.IP(raw) if raw[0] >> 4 == 4 else dpkt.ip6.IP6(raw)
            elif link in (dpkt.pcap.DLT_RAW, 101):
                pkt = dpkt.ip.IP(raw) if raw[0] >> 4 == 4 else dpkt.ip6.IP6(raw)
            else:
                pkt = dpkt.ethernet.Ethernet(raw).data
            if isinstance(pkt, (dpkt.ip.IP, dpkt.ip6.IP6)):
                yield pkt


def tcp_streams(pcap_path, port=None):
    """The TCP streams of a capture that carry data, in order of first packet.
    The client is the side that sent the SYN, or else the side not using `port`."""
    import dpkt

    streams = {}
    for ip in _ip_packets(pcap_path):
        tcp = ip.data
        if not isinstance(tcp, dpkt.tcp.TCP):
            continue
        fam = socket.AF_INET if isinstance(ip, dpkt.ip.IP) else socket.AF_INET6
        a = (socket.inet_ntop(fam, ip.src), tcp.sport)
        b = (socket.inet_ntop(fam, ip.dst), tcp.dport)
        key = frozenset((a, b))
        if key not in streams:
            syn_only = tcp.flags & dpkt.tcp.TH_SYN and not tcp.flags & dpkt.tcp.TH_ACK
            if syn_only or (port is not None and b[1] == port):
                streams[key] = Stream(a, b)
            elif port is not None and a[1] == port:
                streams[key] = Stream(b, a)
            else:
                streams[key] = Stream(a, b)
        s = streams[key]
        s.add(a == s.client, tcp.seq, bytes(tcp.data))
    return [s for s in streams.values() if s.c2s or s.s2c]


def envoy_corpus_data(corpus_file) -> list:
    """The raw `on_data.data` payloads of an Envoy network-filter fuzz case."""
    text = pathlib.Path(corpus_file).read_text()
    out = []
    for m in re.finditer(r'data:\s*"((?:[^"\\]|\\.)*)"', text):
        out.append(_c_unescape(m.group(1)))
    return out


def _c_unescape(s: str) -> bytes:
    out, i = bytearray(), 0
    simple = {"n": 10, "t": 9, "r": 13, "\\": 92, '"': 34, "'": 39, "a": 7, "b": 8,
              "f": 12, "v": 11, "0": 0}
    while i < len(s):
        c = s[i]
        if c != "\\":
            out += c.encode("latin-1")
            i += 1
            continue
        nxt = s[i + 1]
        if nxt in "xX":
            m = re.match(r"[0-9a-fA-F]{1,2}", s[i + 2:])
            out.append(int(m.group(0), 16))
            i += 2 + len(m.group(0))
        elif nxt.isdigit():
            m = re.match(r"[0-7]{1,3}", s[i + 1:])
            out.append(int(m.group(0), 8) & 0xFF)
            i += 1 + len(m.group(0))
        else:
            out.append(simple.get(nxt, ord(nxt)))
            i += 2
    return bytes(out)


__all__ = ["ROOT", "path", "tcp_streams", "envoy_corpus_data", "Stream"]
