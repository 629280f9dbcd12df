"""Fixtures for the proxy runtime tests: real servers, started per test module."""

import pytest

from .harness import redis_server


@pytest.fixture(scope="module")
def redis_a():
    proc = redis_server()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def redis_b():
    proc = redis_server()
    yield proc
    proc.stop()
