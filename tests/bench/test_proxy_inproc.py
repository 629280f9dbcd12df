"""bench.proxy_inproc drives every case through the real runtime and checks the replies."""

import pytest

from bench import proxy_inproc


@pytest.mark.parametrize("case", sorted(proxy_inproc.CASES))
def test_every_case_delivers_its_replies(case):
    codec, routed, pipelined = proxy_inproc.CASES[case]
    assert proxy_inproc.measure(codec, routed, 40, 1, pipelined) > 0


def test_main_prints_one_line_per_case(capsys):
    assert proxy_inproc.main(["--quick", "--only", "redis,http"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == ["redis", "http"]
