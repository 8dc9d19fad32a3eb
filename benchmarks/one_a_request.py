"""One prompt a request: is the pool as fast as a plain loop of ``AsyncOpenAI`` calls?

Code from the earlier system sends one chat request per prompt (``use_batch=False``), and an
endpoint that refuses a list of prompts gets one string prompt a request (the fallback path).
Neither may cost more than what a user would write by hand: a loop of ``AsyncOpenAI`` calls,
prompt ``i`` to server ``i % n``, the same number in flight. Measured on real servers, methods
interleaved, on warm clients (each warmed by one unmeasured run), median of ``--repeat``:

- ``send_all``: ``VLLMPool(use_batch=False).send_all``, one chat request a prompt;
- ``plain chat loop``: ``AsyncOpenAI.chat.completions.create`` per prompt;
- ``fallback``: ``send_all_batched`` on endpoints marked as taking one string a request (as the
  pool marks a server that refused a list), one ``/v1/completions`` request a prompt;
- ``plain completions loop``: ``AsyncOpenAI.completions.create`` per prompt.

Run: ``python -m benchmarks.one_a_request --hostfile H --model M [--prompts 256]
[--concurrency 64] [--repeat 3] [--strict]``. Prints the times and one PASS / FAIL line per
comparison (``--strict``: exit 1 on a FAIL); two runs of one method differ by up to ~10% on a
shared two-core machine, which the verdict allows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

import anyio
import openai

from aurora_swarm import Endpoint, VLLMPool, parse_hostfile

NOISE = 1.1  # two runs of one method differ by up to this much here
Method = Callable[[list[str]], Awaitable[None]]


def make_prompts(n: int) -> list[str]:
    return [f"Question {i}: name a colour and a number near {i % 97}." for i in range(n)]


def plain_loop(clients: Sequence[openai.AsyncOpenAI], model: str, concurrency: int,
               max_tokens: int, chat: bool) -> Method:
    """What a user writes by hand: one call a prompt, round-robin, ``concurrency`` in flight."""
    async def run(prompts: list[str]) -> None:
        limiter = anyio.CapacityLimiter(concurrency)

        async def one(i: int, prompt: str) -> None:
            client = clients[i % len(clients)]
            async with limiter:
                if chat:
                    await client.chat.completions.create(
                        model=model, messages=[{"role": "user", "content": prompt}],
                        max_tokens=max_tokens, temperature=0.0)
                else:
                    await client.completions.create(model=model, prompt=prompt,
                                                    max_tokens=max_tokens, temperature=0.0)

        async with anyio.create_task_group() as group:
            for i, prompt in enumerate(prompts):
                group.start_soon(one, i, prompt)
    return run


async def measure(endpoints: list[Endpoint], model: str, n: int, concurrency: int,
                  max_tokens: int, repeat: int) -> dict[str, list[float]]:
    prompts = make_prompts(n)
    clients = [openai.AsyncOpenAI(base_url=f"{e.origin}{e.path}", api_key="none",
                                  max_retries=0, timeout=600) for e in endpoints]
    per_endpoint = max(1, concurrency // len(endpoints))
    async with VLLMPool(endpoints, model=model, max_tokens=max_tokens, use_batch=False,
                        max_concurrency=concurrency,
                        sampling={"temperature": 0.0}) as singles, \
            VLLMPool(endpoints, model=model, max_tokens=max_tokens,
                     max_concurrency=concurrency, fallback_concurrency=per_endpoint,
                     sampling={"temperature": 0.0}) as fallback:
        # As the pool marks a server that answered a string and refused a list of one.
        for endpoint in endpoints:
            fallback._core.detected[endpoint].list_prompts = False

        async def send_all(batch: list[str]) -> None:
            out = await singles.send_all(batch)
            if not all(r.success for r in out):
                raise SystemExit(f"send_all: {sum(not r.success for r in out)} prompts failed")

        async def fallback_path(batch: list[str]) -> None:
            out = await fallback.send_all_batched(batch)
            if not all(r.success for r in out):
                raise SystemExit(f"fallback: {sum(not r.success for r in out)} prompts failed")

        methods: dict[str, Method] = {
            "send_all": send_all,
            "plain chat loop": plain_loop(clients, model, concurrency, max_tokens, chat=True),
            "fallback": fallback_path,
            "plain completions loop": plain_loop(clients, model, concurrency, max_tokens,
                                                 chat=False),
        }
        times: dict[str, list[float]] = {name: [] for name in methods}
        for method in methods.values():  # warm-up: connections, the model's context
            await method(prompts[: min(n, 2 * concurrency)])
        for _ in range(repeat):
            for name, method in methods.items():
                start = time.monotonic()
                await method(prompts)
                times[name].append(time.monotonic() - start)
        single = fallback.stats().single_requests
        if single < n * repeat:
            raise SystemExit(f"the fallback path sent {single} requests of one prompt, "
                             f"fewer than the {n * repeat} prompts measured")
    for client in clients:
        await client.close()
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hostfile", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--strict", action="store_true", help="exit 1 if a comparison fails")
    args = parser.parse_args(argv)
    endpoints = parse_hostfile(args.hostfile)
    times = anyio.run(measure, endpoints, args.model, args.prompts, args.concurrency,
                      args.max_tokens, args.repeat)
    medians = {name: statistics.median(runs) for name, runs in times.items()}
    print(f"{args.prompts} prompts, one a request, {args.concurrency} in flight, over "
          f"{len(endpoints)} servers; max_tokens {args.max_tokens}; median of {args.repeat}, "
          f"methods interleaved, warm clients")
    for name, runs in times.items():
        print(f"{name:>24}: {medians[name]:6.2f} s  ({args.prompts / medians[name]:6.1f} "
              f"prompts/s; runs {', '.join(f'{r:.2f}' for r in runs)})")
    failed = False
    for ours, plain in (("send_all", "plain chat loop"),
                        ("fallback", "plain completions loop")):
        ratio = medians[ours] / medians[plain]
        ok = ratio <= NOISE
        failed |= not ok
        print(f"{ours} at most {NOISE}x the {plain}: {'PASS' if ok else 'FAIL'} ({ratio:.2f}x)")
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
