"""Servers that are not vLLM, and calls that always end.

Endpoints 0 and 1 are vLLM-like; endpoint 2 behaves like Ollama or llama-cpp-python: one string
prompt a request (a list is refused with HTTP 400), no ``/health``, no ``max_model_len``. The
pool learns that from the requests it sends anyway and gives endpoint 2 its prompts one a
request; ``capabilities()`` shows what each endpoint can do, ``stats()`` how many batched and
single requests it got. Then a fleet that never answers: a ``deadline`` ends the call on time,
every prompt with an error that says why.

Run it with ``python examples/servers.py``.
"""

import time

import anyio

from aurora_swarm import VLLMPool
from aurora_swarm.testing import EndpointBehavior, FakeFleet, LatencyModel, expected_answer


async def main() -> None:
    ollama_like = EndpointBehavior(list_prompts=False, vllm_extras=False)
    prompts = [f"Summarize abstract {i}." for i in range(300)]
    latency = LatencyModel(prompt_time=0.01, max_concurrent_seqs=16)
    async with FakeFleet(3, behaviors={2: ollama_like}, latency=latency) as fleet:
        async with VLLMPool(fleet.endpoints, model=fleet.model, max_tokens=16,
                            fallback_concurrency=8) as pool:
            answers = await pool.send_all_batched(prompts)
            right = [a.text for a in answers] == [expected_answer(p, 16)[0] for p in prompts]
            print(f"{len(answers)} answers, each its prompt's: {right}")
            for k, caps in enumerate(pool.capabilities().values()):
                print(f"endpoint {k}: lists={caps.list_prompts}, health={caps.health_route}, "
                      f"metrics={caps.metrics}")

            before = pool.stats()
            alone = await pool.select([2]).send_all_batched(prompts[:50])
            row = (pool.stats() - before).endpoints[2]
            print(f"endpoint 2 alone: {sum(a.success for a in alone)} answered with "
                  f"{row.single_requests} single and {row.batch_requests} batched requests")

    silent = EndpointBehavior(default_action="hang")
    async with FakeFleet(2, behaviors=[silent, silent]) as fleet:
        async with VLLMPool(fleet.endpoints, model=fleet.model, max_tokens=16,
                            deadline=1.0) as pool:
            start = time.perf_counter()
            lost = await pool.send_all_batched(prompts[:20])
            print(f"servers that never answer: {sum(not a.success for a in lost)} failed in "
                  f"{time.perf_counter() - start:.1f} s: {lost[0].error}")


if __name__ == "__main__":
    anyio.run(main)
