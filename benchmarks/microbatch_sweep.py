"""Micro-batching sweep: latency and throughput of coalesced one-prompt calls vs no batcher.

50 concurrent callers each ask one prompt at a time, in a loop, until 500 are answered: through a
:class:`~aurora_swarm.MicroBatcher` for each ``(max_batch, max_wait_ms)`` setting, or without
one. The no-batcher baseline is ``pool.post_batch(agent, [prompt])``, round-robin over the
agents: the very route the batcher sends its batches by, with batches of one, so the comparison
isolates coalescing (like with like). ``pool.post`` (one chat request per prompt, what the code
would call without a batcher) is measured too and reported beside it. The fake fleet answers
both routes with the same latency model. The fleet runs in its own process; the settings are
interleaved, each repeat in a rotated order, so drift on a shared machine hits all of them
alike, and every figure is the median over the repeats.

Run: ``python -m benchmarks.microbatch_sweep [--repeat 3] [--out benchmarks/results/microbatch]``
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import anyio

from aurora_swarm import Endpoint, Response, VLLMPool
from aurora_swarm._microbatch import MicroBatcher
from aurora_swarm.testing import expected_answer

from .fleet_process import fleet_process

MODEL = "fake-model"
MAX_TOKENS = 16
SWEEP = [(1, 0.0), (2, 10.0), (4, 10.0), (8, 20.0), (16, 20.0), (32, 50.0)]
BASELINE = "no batcher: post_batch x1"
POST = "no batcher: pool.post"
Ask = Callable[[int, str], Awaitable[Response]]
Setting = str | tuple[int, float]


@dataclass
class Run:
    """One measured run of one setting."""

    elapsed: float
    latencies: list[float]
    requests: int
    sizes: Counter[int] = field(default_factory=Counter)


@dataclass
class Row:
    """The median figures of one setting."""

    setting: str
    max_batch: int | None
    max_wait_ms: float | None
    p50_ms: float
    p95_ms: float
    p99_ms: float
    throughput_rps: float
    http_requests: int
    sizes: dict[int, int]
    runs: int
    vs_baseline: float = 1.0
    vs_post: float = 1.0

    @property
    def mean_batch_size(self) -> float:
        batches = sum(self.sizes.values())
        return sum(s * c for s, c in self.sizes.items()) / batches if batches else 1.0

    def csv(self) -> dict[str, object]:
        fill = self.mean_batch_size / self.max_batch if self.max_batch else 1.0
        return {
            "setting": self.setting, "max_batch": self.max_batch or "",
            "max_wait_ms": "" if self.max_wait_ms is None else self.max_wait_ms,
            "p50_ms": round(self.p50_ms, 2), "p95_ms": round(self.p95_ms, 2),
            "p99_ms": round(self.p99_ms, 2), "throughput_rps": round(self.throughput_rps, 1),
            "vs_baseline": round(self.vs_baseline, 3), "vs_pool_post": round(self.vs_post, 3),
            "http_requests": self.http_requests,
            "mean_batch_size": round(self.mean_batch_size, 2), "mean_fill": round(fill, 3),
        }


def label(setting: Setting) -> str:
    return setting if isinstance(setting, str) else f"batcher ({setting[0]}, {setting[1]:g})"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0..100)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


async def load(ask: Ask, total: int, concurrency: int) -> tuple[float, list[float]]:
    """``concurrency`` callers ask one prompt at a time until ``total`` are answered."""
    latencies: list[float] = []
    next_index = 0

    async def caller() -> None:
        nonlocal next_index
        while next_index < total:
            index = next_index
            next_index += 1
            prompt = f"question {index} about item {index % 97}"
            began = time.perf_counter()
            response = await ask(index, prompt)
            latencies.append(time.perf_counter() - began)
            if response.text != expected_answer(prompt, MAX_TOKENS)[0]:
                raise AssertionError(f"prompt {index} got someone else's answer: {response}")

    began = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(concurrency):
            group.start_soon(caller)
    return time.perf_counter() - began, latencies


async def one_run(endpoints: list[Endpoint], setting: Setting, total: int, concurrency: int,
                  warmup: int) -> Run:
    """One run in a fresh pool, after an unmeasured warm-up by the same route."""
    async with VLLMPool(endpoints, model=MODEL, max_tokens=MAX_TOKENS) as pool:
        size = pool.size

        async def post(index: int, prompt: str) -> Response:
            return await pool.post(index % size, prompt, MAX_TOKENS)

        async def post_one(index: int, prompt: str) -> Response:
            (response,) = await pool.post_batch(index % size, [prompt], MAX_TOKENS)
            return response

        if isinstance(setting, str):
            ask = post if setting == POST else post_one
            await load(ask, warmup, concurrency)
            before = pool.stats().requests
            elapsed, latencies = await load(ask, total, concurrency)
            return Run(elapsed, latencies, pool.stats().requests - before)
        max_batch, max_wait = setting
        async with MicroBatcher(pool, max_batch=max_batch, max_wait_ms=max_wait,
                                max_tokens=MAX_TOKENS) as warm:
            await load(lambda _i, p: warm.submit(p), warmup, concurrency)
        before = pool.stats().requests
        async with MicroBatcher(pool, max_batch=max_batch, max_wait_ms=max_wait,
                                max_tokens=MAX_TOKENS) as batcher:
            elapsed, latencies = await load(lambda _i, p: batcher.submit(p), total, concurrency)
        stats = batcher.stats()
        if stats.answered != total or stats.resent:
            raise AssertionError(f"a fault in a clean run: {stats}")
        return Run(elapsed, latencies, pool.stats().requests - before,
                   Counter(stats.batch_sizes))


def summarize(setting: Setting, runs: list[Run], total: int) -> Row:
    """Median over runs of each figure; batch sizes summed over runs."""
    sizes: Counter[int] = Counter()
    for run in runs:
        sizes.update(run.sizes)

    def ms(q: float) -> float:
        return statistics.median(1000 * percentile(run.latencies, q) for run in runs)

    return Row(
        setting=label(setting),
        max_batch=None if isinstance(setting, str) else setting[0],
        max_wait_ms=None if isinstance(setting, str) else setting[1],
        p50_ms=ms(50), p95_ms=ms(95), p99_ms=ms(99),
        throughput_rps=statistics.median(total / run.elapsed for run in runs),
        http_requests=round(statistics.median(run.requests for run in runs)),
        sizes=dict(sorted(sizes.items())), runs=len(runs),
    )


def manifest(args: argparse.Namespace, started: str) -> dict[str, object]:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    def git(*command: str) -> str:
        try:
            done = subprocess.run(["git", *command], capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            return "unknown"
        return done.stdout.strip()

    return {
        "benchmark": " ".join(["python -m benchmarks.microbatch_sweep", *sys.argv[1:]]),
        "date": started,
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty_src_or_benchmarks": bool(git("status", "--porcelain", "src", "benchmarks")),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "versions": {name: version(name) for name in
                     ("aurora-swarm", "anyio", "openai", "httpx2", "attrs", "matplotlib")},
        "configuration": {
            "concurrency": args.concurrency, "requests_per_run": args.requests,
            "warmup_requests": args.warmup, "repeat": args.repeat,
            "statistic": "median over runs; batch sizes summed over runs",
            "endpoints": args.endpoints, "max_tokens": MAX_TOKENS,
            "latency_model": {"request_overhead_s": args.overhead_ms / 1000,
                              "prompt_time_s": args.prompt_ms / 1000,
                              "max_concurrent_seqs": args.seqs},
            "fleet": "fake fleet in its own process (python -m aurora_swarm.testing)",
            "baseline": "pool.post_batch(agent, [prompt]), round-robin: the batcher's route",
            "also_measured": "pool.post(agent, prompt), round-robin: one chat request each",
            "sweep": [{"max_batch": b, "max_wait_ms": w} for b, w in SWEEP],
        },
    }


def plot(rows: list[Row], out: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    base = next(r for r in rows if r.setting == BASELINE)
    post = next(r for r in rows if r.setting == POST)
    sweep = [r for r in rows if r.max_batch is not None]
    xs = [r.max_batch for r in sweep]

    def line_plot(metric: str, ylabel: str, title: str, name: str) -> None:
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        ys = [getattr(r, metric) for r in sweep]
        if metric == "p95_ms":
            ax.fill_between(xs, [r.p50_ms for r in sweep], [r.p99_ms for r in sweep],
                            color="C0", alpha=0.15, label="MicroBatcher p50 to p99")
        series = "MicroBatcher p95" if metric == "p95_ms" else "MicroBatcher"
        ax.plot(xs, ys, "o-", color="C0", lw=2, label=series, zorder=3)
        for r, y in zip(sweep, ys, strict=True):
            ax.annotate(f"{r.max_wait_ms:g} ms", (r.max_batch, y), textcoords="offset points",
                        xytext=(0, 8), ha="center", fontsize=8, color="C0")
        unit = "/s" if metric == "throughput_rps" else " ms"
        for ref, style, color in ((base, "--", "C3"), (post, ":", "C2")):
            value = getattr(ref, metric)
            ax.axhline(value, color=color, ls=style, lw=1.5,
                       label=f"{ref.setting} ({value:.0f}{unit})")
        if metric == "throughput_rps":
            ax.axhline(1.5 * base.throughput_rps, color="C3", ls="-.", lw=1, alpha=0.5,
                       label="1.5 × baseline (target for max_batch ≥ 4)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("max_batch (point labels: max_wait_ms)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 1.15 * max([*ys, getattr(base, metric), getattr(post, metric)]))
        ax.set_title(title, fontsize=11)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)

    line_plot("throughput_rps", "throughput (prompts/s)", f"Throughput, {subtitle}",
              "throughput_vs_batch.png")
    line_plot("p95_ms", "latency per prompt (ms)", f"p95 latency (band: p50 to p99), {subtitle}",
              "p95_vs_batch.png")

    fig, axs = plt.subplots(2, 3, figsize=(11, 6.2), sharey=True)
    for ax, r in zip(axs.flat, sweep, strict=True):
        top = r.max_batch or 1
        batches = sum(r.sizes.values())
        shares = [100 * r.sizes.get(s, 0) / batches for s in range(1, top + 1)]
        ax.bar(range(1, top + 1), shares, width=0.85, color="C0")
        ax.set_title(f"max_batch={top}, max_wait={r.max_wait_ms:g} ms\nmean "
                     f"{r.mean_batch_size:.1f} prompts ({100 * r.mean_batch_size / top:.0f}% full)"
                     f", {batches} batches", fontsize=9)
        ax.set_xlim(0.3, top + 0.7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8, min_n_ticks=1))
        ax.set_xlabel("prompts in the batch")
        ax.grid(axis="y", alpha=0.3)
    for ax in axs[:, 0]:
        ax.set_ylabel("% of batches")
    fig.suptitle(f"How full the batches were (all {sweep[0].runs} runs of each setting)",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(out / "batch_fullness.png", dpi=120)
    plt.close(fig)


def write(rows: list[Row], info: dict[str, object], out: Path, subtitle: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0].csv()))
        writer.writeheader()
        writer.writerows(r.csv() for r in rows)
    with open(out / "batch_sizes.csv", "w", newline="") as fh:
        sizes = csv.writer(fh)
        sizes.writerow(["max_batch", "max_wait_ms", "batch_size", "batches"])
        for r in rows:
            for size, count in r.sizes.items():
                sizes.writerow([r.max_batch, r.max_wait_ms, size, count])
    (out / "manifest.json").write_text(json.dumps(info, indent=2) + "\n")
    plot(rows, out, subtitle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="prompts per run")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent callers")
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured prompts first")
    parser.add_argument("--repeat", type=int, default=3, help="runs per setting (median)")
    parser.add_argument("--endpoints", type=int, default=2)
    parser.add_argument("--overhead-ms", type=float, default=5.0,
                        help="fake server: wait of every request before its prompts start")
    parser.add_argument("--prompt-ms", type=float, default=10.0,
                        help="fake server: time one prompt holds a sequence slot")
    parser.add_argument("--seqs", type=int, default=32,
                        help="fake server: sequence slots per endpoint")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/microbatch"))
    args = parser.parse_args()
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    capacity = args.endpoints * args.seqs / (args.prompt_ms / 1000)
    print(f"fake fleet, own process: {args.endpoints} endpoints; a request waits "
          f"{args.overhead_ms:g} ms, then each prompt holds one of {args.seqs} sequence slots "
          f"of its endpoint for {args.prompt_ms:g} ms (fleet capacity {capacity:.0f} prompts/s)")
    print(f"load: {args.concurrency} concurrent callers, {args.requests} prompts a run after "
          f"{args.warmup} warm-up, max_tokens={MAX_TOKENS}; median of {args.repeat} runs")
    settings: list[Setting] = [BASELINE, POST, *SWEEP]
    runs: dict[str, list[Run]] = {label(s): [] for s in settings}
    with fleet_process(args.endpoints, request_overhead=args.overhead_ms / 1000,
                       prompt_time=args.prompt_ms / 1000,
                       max_concurrent_seqs=args.seqs) as endpoints:
        for rep in range(args.repeat):
            shift = rep * len(settings) // args.repeat  # no setting always runs first
            for setting in settings[shift:] + settings[:shift]:
                run = anyio.run(one_run, endpoints, setting, args.requests, args.concurrency,
                                args.warmup)
                runs[label(setting)].append(run)
                print(f"  run {rep + 1}/{args.repeat}  {label(setting):<26}"
                      f"{args.requests / run.elapsed:8.1f} prompts/s", flush=True)
    rows = [summarize(s, runs[label(s)], args.requests) for s in settings]
    base, post = rows[0], rows[1]
    for row in rows:
        row.vs_baseline = row.throughput_rps / base.throughput_rps
        row.vs_post = row.throughput_rps / post.throughput_rps

    print(f"\n{'setting':<27}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'prompts/s':>11}"
          f"{'x base':>8}{'x post':>8}{'requests':>10}{'mean batch':>12}")
    for r in rows:
        print(f"{r.setting:<27}{r.p50_ms:>8.1f}{r.p95_ms:>8.1f}{r.p99_ms:>8.1f}"
              f"{r.throughput_rps:>11.1f}{r.vs_baseline:>8.2f}{r.vs_post:>8.2f}"
              f"{r.http_requests:>10}{r.mean_batch_size:>12.2f}")
    one = next(r for r in rows if r.max_batch == 1)
    worst = min((r for r in rows if (r.max_batch or 0) >= 4), key=lambda r: r.vs_baseline)
    gain_ok = worst.vs_baseline >= 1.5
    one_ok = abs(one.vs_baseline - 1) <= 0.10
    print(f"\ncheck 1, max_batch >= 4 at least 1.5x the baseline: lowest is {worst.setting} at "
          f"{worst.vs_baseline:.2f}x ({worst.vs_post:.2f}x pool.post): "
          f"{'PASS' if gain_ok else 'FAIL'}")
    print(f"check 2, max_batch = 1 within 10% of the baseline: {one.vs_baseline:.2f}x "
          f"({one.vs_post:.2f}x pool.post): {'PASS' if one_ok else 'FAIL'}")

    info = manifest(args, started)
    info["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    info["checks"] = {
        "max_batch_ge_4_lowest_ratio": round(worst.vs_baseline, 3),
        "max_batch_ge_4_lowest_setting": worst.setting,
        "max_batch_ge_4_pass": gain_ok,
        "max_batch_1_ratio": round(one.vs_baseline, 3),
        "max_batch_1_pass": one_ok,
        "max_batch_1_ratio_vs_pool_post": round(one.vs_post, 3),
    }
    write(rows, info, args.out,
          f"{args.concurrency} concurrent one-prompt callers, {args.requests} prompts")
    print(f"\nwrote results.csv, batch_sizes.csv, manifest.json and three PNGs to {args.out}")


if __name__ == "__main__":
    main()
