"""Fixtures for the pattern tests: a fake fleet with a long context, pools on it, test doubles.

The fake fleet echoes each prompt (``"ECHO: " + prompt``), so a supervisor's answer contains
every answer it merged, and a test can trace each leaf up to the root.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from aurora_swarm import Endpoint, HealthPolicy, Response, RetryPolicy, VLLMPool
from aurora_swarm.testing import FakeFleet

from ..conftest import BOTH_BACKENDS, fleet_of

# The patterns run on asyncio and trio alike: every test here runs on both.
anyio_backend = BOTH_BACKENDS

MODEL = "fake-model"
LONG_CONTEXT = 1_000_000
BIG = 100_000  # max_tokens large enough that echoed supervisor prompts are never cut
FAST_RETRY = RetryPolicy(max_attempts=5, initial_backoff=0.005, max_backoff=0.05)
FAST_HEALTH = HealthPolicy(failure_threshold=3, cooldown=0.05, max_cooldown=0.2, probe_timeout=1)


def open_pool(endpoints: Sequence[Endpoint], **options: object) -> VLLMPool:
    """A pool on ``endpoints`` with fast retries and health checks (options override)."""
    settings: dict[str, object] = {"max_tokens": BIG, "retry": FAST_RETRY, "health": FAST_HEALTH}
    settings.update(options)
    return VLLMPool(endpoints, model=MODEL, **settings)  # type: ignore[arg-type]


def echo(prompt: str) -> str:
    return "ECHO: " + prompt


@pytest.fixture
async def fleet() -> AsyncIterator[FakeFleet]:
    async with fleet_of(4, model=MODEL, max_model_len=LONG_CONTEXT) as running:
        yield running


@pytest.fixture
async def pool(fleet: FakeFleet) -> AsyncIterator[VLLMPool]:
    async with open_pool(fleet.endpoints, transport=fleet.transport) as opened:
        yield opened


class ScriptedPool:
    """A test double of the ``Pool`` protocol: echoes prompts, fails or empties some on cue.

    A prompt containing ``FAIL`` gets a failed response, one containing ``EMPTY`` an empty
    answer. Every call is recorded in ``calls``.
    """

    def __init__(self, size: int = 3, answer: Callable[[str], str] = echo) -> None:
        self.size = size
        self.answer = answer
        self.calls: list[tuple[list[str], int | None]] = []

    async def send_all_batched(
        self, prompts: Sequence[str], max_tokens: int | None = None
    ) -> list[Response]:
        from aurora_swarm import HTTPStatusError

        self.calls.append((list(prompts), max_tokens))
        out = []
        for k, prompt in enumerate(prompts):
            if "FAIL" in prompt:
                out.append(Response.failure(HTTPStatusError(500, "scripted"), agent_index=k))
            elif "EMPTY" in prompt:
                out.append(Response(success=True, text="  ", agent_index=k))
            else:
                out.append(Response(success=True, text=self.answer(prompt), agent_index=k))
        return out


@pytest.fixture
def scripted() -> ScriptedPool:
    return ScriptedPool()
