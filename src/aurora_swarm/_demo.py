"""The demo: batch against non-batch on a local fake fleet, side by side."""

from __future__ import annotations

import time

import anyio

from ._pool import VLLMPool
from .testing import FakeFleet, LatencyModel, expected_answer

__all__ = ["run_demo"]


async def _run(mode: str, fleet: FakeFleet, prompts: list[str], max_tokens: int) -> list[str]:
    from .patterns.scatter_gather import scatter_gather

    fleet.reset_counters()
    async with VLLMPool(fleet.endpoints, model=fleet.model, max_tokens=max_tokens,
                        use_batch=(mode == "batch")) as pool:
        start = time.perf_counter()
        out = await scatter_gather(pool, prompts)
        elapsed = time.perf_counter() - start
        requests = pool.stats().requests
    in_order = all(r.success and r.text == expected_answer(p, max_tokens)[0]
                   for p, r in zip(prompts, out, strict=True))
    return [mode, str(requests), f"{elapsed:.2f}", f"{len(prompts) / elapsed:.0f}",
            "yes" if in_order else "NO"]


async def _demo(endpoints: int, prompts: int, latency: LatencyModel) -> tuple[list[str], ...]:
    texts = [f"Summarise finding {i} in one sentence." for i in range(prompts)]
    async with FakeFleet(endpoints, latency=latency) as fleet:
        batch = await _run("batch", fleet, texts, 32)
        plain = await _run("non-batch", fleet, texts, 32)
    return batch, plain


def run_demo(endpoints: int = 8, prompts: int = 400) -> int:
    """Run ``scatter_gather`` in batch and non-batch mode on a local fleet; print both.

    Returns the exit status: 0 when every answer came back in order in both modes.
    """
    latency = LatencyModel(request_overhead=0.005, prompt_time=0.02, max_concurrent_seqs=32)
    print(f"aurora-swarm demo: scatter_gather of {prompts} prompts over {endpoints} local fake "
          f"vLLM endpoints\n(each endpoint: {latency.request_overhead * 1000:.0f} ms a request, "
          f"{latency.prompt_time * 1000:.0f} ms a prompt, "
          f"{latency.max_concurrent_seqs} sequences at once)\n")
    rows = anyio.run(_demo, endpoints, prompts, latency)
    header = ["mode", "HTTP requests", "time (s)", "prompts/s", "all answered, in order"]
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(header)]
    for row in (header, *rows):
        print("  ".join(cell.rjust(w) if k else cell.ljust(w)
                        for k, (cell, w) in enumerate(zip(row, widths, strict=True))))
    batch, plain = rows
    fewer = int(plain[1]) / max(1, int(batch[1]))
    faster = float(plain[2]) / max(1e-9, float(batch[2]))
    print(f"\nbatch mode sent {fewer:.0f}x fewer requests and finished {faster:.1f}x faster.")
    return 0 if batch[4] == plain[4] == "yes" else 1
