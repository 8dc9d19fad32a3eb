"""Shared fixtures: a small fake fleet on loopback and a pool on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aurora_swarm import RetryPolicy, VLLMPool
from aurora_swarm.testing import FakeFleet

MODEL = "fake-model"
FAST_RETRY = RetryPolicy(max_attempts=5, initial_backoff=0.005, max_backoff=0.05)


@pytest.fixture
async def fleet() -> AsyncIterator[FakeFleet]:
    async with FakeFleet(4, model=MODEL) as running:
        yield running


@pytest.fixture
async def pool(fleet: FakeFleet) -> AsyncIterator[VLLMPool]:
    async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=64, retry=FAST_RETRY) as opened:
        yield opened
