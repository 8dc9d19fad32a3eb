"""Shared fixtures: a small in-process fake fleet and a pool on it; test helpers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from aurora_swarm import RetryPolicy, VLLMPool
from aurora_swarm.testing import FakeFleet

MODEL = "fake-model"


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio; a module whose code runs on trio too overrides this with
    :func:`both_backends`."""
    return "asyncio"


def both_backends(request: pytest.FixtureRequest) -> str:
    """An ``anyio_backend`` fixture body for modules that run on asyncio and trio."""
    return str(request.param)


BOTH_BACKENDS = pytest.fixture(params=["asyncio", "trio"])(both_backends)
FAST_RETRY = RetryPolicy(max_attempts=5, initial_backoff=0.005, max_backoff=0.05)


def fleet_of(n_endpoints: int = 4, **options: Any) -> FakeFleet:
    """The unit tests' fleet: fake endpoints in-process, answering through
    ``fleet.transport`` without sockets (the loopback fleet is for integration tests)."""
    return FakeFleet(n_endpoints, in_process=True, **options)


@pytest.fixture
async def fleet() -> AsyncIterator[FakeFleet]:
    async with fleet_of(4, model=MODEL) as running:
        yield running


@pytest.fixture
async def pool(fleet: FakeFleet) -> AsyncIterator[VLLMPool]:
    async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=64, retry=FAST_RETRY,
                        transport=fleet.transport) as opened:
        yield opened


QUICK_EXAMPLES = 50


def property_examples(ci: int) -> int:
    """Examples a Hypothesis property runs: ``$AURORA_SWARM_PROPERTY_EXAMPLES`` when set (CI's
    property step sets it to ``ci``), else at most :data:`QUICK_EXAMPLES`, so the unit suite
    stays fast enough to run before every commit."""
    given = os.environ.get("AURORA_SWARM_PROPERTY_EXAMPLES")
    return int(given) if given else min(ci, QUICK_EXAMPLES)


async def until(condition: Callable[[], bool], *, limit: float = 30.0) -> None:
    """Wait, one scheduling checkpoint at a time, until ``condition()`` holds.

    Tests synchronise on what happened (a counter, a queue length), never on how long
    something took; ``limit`` only stops a test that would otherwise hang.
    """
    with anyio.fail_after(limit):
        while not condition():
            await anyio.lowlevel.checkpoint()
