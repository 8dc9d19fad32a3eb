"""The dispatcher wakes when something is due, not at its once-a-second safety look.

These tests bound real time, so they are integration tests: a lost wake-up shows only as a
call that ends a second late, never as a wrong answer.
"""

from __future__ import annotations

import time

import pytest

from aurora_swarm import HealthPolicy, RetryPolicy, VLLMPool
from aurora_swarm.testing import EndpointBehavior

from .conftest import MODEL, fleet_of

pytestmark = pytest.mark.integration

QUICK_RETRY = RetryPolicy(max_attempts=16, initial_backoff=1e-4, max_backoff=1e-3)
QUICK_HEALTH = HealthPolicy(cooldown=5e-4, max_cooldown=2e-3)


@pytest.mark.parametrize("script", [("drop", "500", "503", "ok"), ("503", "503", "503", "ok")])
async def test_a_benched_only_endpoint_is_probed_at_once(script: tuple[str, ...]) -> None:
    # Three failures bench the fleet's one endpoint; its first /health probe is due at once.
    # Nothing else can wake the call, so the decider must start that probe itself (it once
    # waited for its one-second look: every such call took a second more than it needed).
    async with fleet_of(1, model=MODEL, behaviors=[EndpointBehavior(script=script)]) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8, retry=QUICK_RETRY,
                            health=QUICK_HEALTH, transport=fleet.transport) as pool:
            began = time.perf_counter()
            out = await pool.send_all_batched(["a", "b"])
            took = time.perf_counter() - began
    assert [r.success for r in out] == [True, True]
    assert fleet.counters(0).requests.get("/health", 0) >= 1  # benched, probed, back
    assert took < 0.5, f"the call took {took:.2f} s: a wake-up was lost"
