"""Order and failure semantics: answers in input order, failures as data, strict mode.

The fleet misbehaves on purpose: endpoint 1 returns the choices of every batched answer in a
shuffled order, endpoint 2 answers its first two requests with HTTP 503, and the model's
context is only 64 tokens, so one long prompt cannot fit.

Run it with ``python examples/order_and_failures.py``.
"""

import anyio

from aurora_swarm import BatchError, VLLMPool
from aurora_swarm.patterns import failure_report
from aurora_swarm.testing import EndpointBehavior, FakeFleet, expected_answer


async def main() -> None:
    behaviors = {1: EndpointBehavior(shuffle_choices=True), 2: EndpointBehavior(fail_first=2)}
    prompts = [f"Question {i}: what is {i} squared?" for i in range(200)]
    prompts[13] = "word " * 100  # about 100 tokens: longer than the 64-token context
    async with FakeFleet(4, behaviors=behaviors, max_model_len=64) as fleet:
        async with VLLMPool(fleet.endpoints, model=fleet.model, max_tokens=16) as pool:
            answers = await pool.send_all_batched(prompts)

            in_order = all(a.text == expected_answer(p, 16)[0]
                           for p, a in zip(prompts, answers, strict=True) if a.success)
            print(f"{len(answers)} answers for {len(prompts)} prompts; "
                  f"every answer in its prompt's slot: {in_order}")
            retried = [a for a in answers if a.attempts > 1]
            print(f"{len(retried)} prompts needed a second request; all answered: "
                  f"{all(a.success for a in retried)}")
            print(f"answers[13]: success={answers[13].success}, "
                  f"{type(answers[13].exception).__name__}: {answers[13].error}")
            print(failure_report(answers))

        # strict=True: the same call raises one exception group of the per-prompt failures.
        async with VLLMPool(fleet.endpoints, model=fleet.model, max_tokens=16,
                            strict=True) as strict_pool:
            try:
                await strict_pool.send_all_batched(prompts)
            except BatchError as group:
                print(f"BatchError: {group.message}: {group.exceptions[0]}")


if __name__ == "__main__":
    anyio.run(main)
