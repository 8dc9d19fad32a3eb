"""Results as they settle: ``stream_batched`` yields ``(index, response)`` pairs.

Useful to start post-processing (or write results out) before the last answer arrives. Leaving
the ``async with`` block early (``break``, an exception, a cancellation) cancels what is still
in flight. Endpoint 0 is four times slower than the others here, so its prompts settle last.

Run it with ``python examples/stream_results.py``.
"""

import anyio

from aurora_swarm import VLLMPool
from aurora_swarm.jobs import stream_batched
from aurora_swarm.testing import EndpointBehavior, FakeFleet, LatencyModel


async def main() -> None:
    latency = LatencyModel(prompt_time=0.01, max_concurrent_seqs=8)
    async with FakeFleet(4, latency=latency, behaviors={0: EndpointBehavior(slowness=4)}) as fleet:
        async with VLLMPool(fleet.endpoints, model=fleet.model, max_tokens=16) as pool:
            prompts = [f"Score candidate molecule {i}." for i in range(400)]
            settled = []
            async with stream_batched(pool, prompts) as results:
                async for index, response in results:  # in the order prompts settle
                    settled.append(index)
                    if len(settled) == 1:
                        print(f"first settled: prompt {index}: {response.text!r}")
            print(f"{len(settled)} settled, each once: {sorted(settled) == list(range(400))}")

            async with stream_batched(pool, prompts[:10]) as results:
                answers = await results.ordered()  # or all of them, in input order
            print([a.text for a in answers[:2]])


if __name__ == "__main__":
    anyio.run(main)
