"""The real-vLLM suite: runs only against live servers (see .ci/vllm/run_suite.sh).

``AURORA_SWARM_VLLM_HOSTFILE`` names the servers' hostfile, ``AURORA_SWARM_VLLM_MODEL`` the
served model, ``AURORA_SWARM_VLLM_PIDFILE`` (optional) their process ids, for the test that
kills one. Without a hostfile every test here is skipped, saying why.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import httpx2
import pytest

from aurora_swarm import Endpoint, VLLMPool, parse_hostfile

HOSTFILE = os.environ.get("AURORA_SWARM_VLLM_HOSTFILE")
MODEL = os.environ.get("AURORA_SWARM_VLLM_MODEL", "tiny-llama")
PIDFILE = os.environ.get("AURORA_SWARM_VLLM_PIDFILE")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if HOSTFILE:
        return
    skip = pytest.mark.skip(
        reason="no real vLLM servers: set AURORA_SWARM_VLLM_HOSTFILE "
               "(bash .ci/vllm/run_suite.sh python -m pytest tests/vllm starts them)")
    for item in items:
        if "tests/vllm" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def endpoints() -> list[Endpoint]:
    assert HOSTFILE is not None
    found = parse_hostfile(HOSTFILE)
    for endpoint in found:
        assert httpx2.get(endpoint.url + "/health", timeout=10).status_code == 200, endpoint
    return found


@pytest.fixture
async def pool(endpoints: list[Endpoint]) -> AsyncIterator[VLLMPool]:
    async with VLLMPool(endpoints, model=MODEL, max_tokens=8,
                        sampling={"temperature": 0.0}) as opened:
        yield opened


@pytest.fixture
def server_pids() -> list[int]:
    """Process-group ids of the servers, in hostfile order (skips without a pidfile)."""
    if PIDFILE is None:
        pytest.skip("needs AURORA_SWARM_VLLM_PIDFILE")
    with open(PIDFILE, encoding="utf-8") as handle:
        return [int(word) for word in handle.read().split()]
