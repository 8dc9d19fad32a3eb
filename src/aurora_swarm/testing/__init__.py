"""A fake vLLM fleet for tests, demos and CPU benchmarks.

:class:`FakeFleet` starts many fake OpenAI-compatible vLLM servers on loopback ports in the
caller's event loop. Answers are deterministic (:func:`expected_answer`), so a test can check that
every output belongs to its input; :class:`LatencyModel` makes endpoints take time like a server
with a limited number of concurrent sequences; :class:`EndpointBehavior` injects faults (HTTP 5xx,
429, hangs, dropped connections, an endpoint that dies, choices out of order); and
:class:`EndpointCounters` tell what each endpoint saw. A test of a client (here
:class:`~aurora_swarm.VLLMPool`) against an endpoint that fails its first request:

>>> import anyio
>>> from aurora_swarm import VLLMPool
>>> from aurora_swarm.testing import EndpointBehavior, FakeFleet, expected_answer
>>> async def test_my_client():
...     async with FakeFleet(1, behaviors={0: EndpointBehavior(script=("503",))}) as fleet:
...         async with VLLMPool(fleet.endpoints, model=fleet.model) as client:
...             results = await client.send_all_batched(["a b", "c"])
...         assert [r.text for r in results] == [expected_answer(p)[0] for p in ["a b", "c"]]
...         assert fleet.counters(0).faults == {"503": 1}
...         assert fleet.total_prompts() > 2  # the prompts that met the 503 were sent again
>>> anyio.run(test_my_client)

``FakeFleet(..., in_process=True)`` runs the same endpoints without sockets, on asyncio and
trio: the client reaches them through ``fleet.transport`` (a :class:`MockTransport`), and a
:class:`FakeClock` makes their modelled time pass at once.

From a shell, ``python -m aurora_swarm.testing --endpoints 8 --hostfile fleet.hostfile`` runs a
fleet until SIGINT or SIGTERM (see :func:`serve_fleet`).
"""

from __future__ import annotations

from ._answers import (
    chat_prompt_tokens,
    expected_answer,
    expected_chat_answer,
    expected_embedding,
    prompt_tokens,
)
from ._behavior import ACTIONS, TRANSIENT_FAULTS, EndpointBehavior
from ._cli import serve_fleet
from ._clock import Clock, FakeClock, RealClock
from ._counters import EndpointCounters
from ._fleet import FakeFleet
from ._latency import LatencyModel
from ._mock import MockTransport

__all__ = [
    "ACTIONS",
    "TRANSIENT_FAULTS",
    "Clock",
    "EndpointBehavior",
    "EndpointCounters",
    "FakeClock",
    "FakeFleet",
    "LatencyModel",
    "MockTransport",
    "RealClock",
    "chat_prompt_tokens",
    "expected_answer",
    "expected_chat_answer",
    "expected_embedding",
    "prompt_tokens",
    "serve_fleet",
]

from .._exports import own_exports

own_exports(__name__, globals(), __all__)
del own_exports
