"""bench.proxy_inproc_mux drives routed Dubbo and Thrift batches through the real runtime
and checks every client got all its replies."""

import pytest

from bench import proxy_inproc_mux


@pytest.mark.parametrize("codec", ["dubbo", "thrift"])
@pytest.mark.parametrize("depth,clients", [(16, 1), (3, 4), (1, 2)])
def test_every_shape_delivers_its_replies(codec, depth, clients):
    assert proxy_inproc_mux.measure(codec, depth, clients, 5, 1) > 0


def test_main_prints_one_line_per_codec(capsys):
    assert proxy_inproc_mux.main(["--quick", "--depth", "4", "--only", "thrift,dubbo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == ["thrift-routed", "dubbo-routed"]
