"""Thrift codec on real data: the nDPI capture (checked against the thrift
package's own reading) and Envoy's thrift_proxy fuzz seeds. Skipped when
../shared/realworld is absent."""

import pytest
from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TType
from thrift.transport import TTransport

from agent.codec import Unsupported, decoder_for
from tests import realworld
from tests.codec.harness import check_vector


# -- real captures and Envoy's fuzz seeds ------------------------------------

def thrift_package_messages(data):
    """(name, type, seqid, length) of each message, read by the thrift package."""
    trans = TTransport.TMemoryBuffer(data)
    p = TBinaryProtocol.TBinaryProtocol(trans)
    p.readString = p.readBinary           # the capture holds non-UTF-8 strings
    out, pos = [], 0
    while pos < len(data):
        name, mtype, seqid = p.readMessageBegin()
        p.skip(TType.STRUCT)
        p.readMessageEnd()
        end = trans._buffer.tell()
        out.append((name, mtype, seqid, end - pos))
        pos = end
    return out


def test_ndpi_capture():
    streams = [s for s in realworld.tcp_streams(realworld.path("wire", "ndpi", "thrift.pcap"))
               if s.c2s]
    assert streams
    total = 0
    for s in streams:
        for data in (s.c2s, s.s2c):
            frames = decoder_for("thrift").feed(data)
            assert sum(f.length for f in frames) == len(data)
            want = thrift_package_messages(data)
            assert [(f.metadata["method"], f.status, f.request_id, f.length) for f in frames] == \
                [(n.decode(), t, q & 0xFFFFFFFF, ln) for n, t, q, ln in want]
            total += len(frames)
            check_vector("thrift", data[:frames[0].length], max_every_split=4096)
    assert total > 10


def envoy_seed(name):
    return b"".join(realworld.envoy_corpus_data(
        realworld.path("wire", "envoy_fuzz_corpus", name)))


def test_envoy_seeds():
    frames = check_vector("thrift", envoy_seed("thrift_proxy_on_data_handles_thriftcall"),
                          [{"kind": "request", "request_id": 15, "metadata": {"method": "name"}}])
    assert len(frames) == 1
    check_vector("thrift", envoy_seed("thrift_proxy_pipelined_request1"),
                 [{"request_id": 1, "length": 33}, {"request_id": 2, "offset": 33}])
    with pytest.raises(Unsupported):
        decoder_for("thrift").feed(envoy_seed("thrift_proxy_app_exception"))
