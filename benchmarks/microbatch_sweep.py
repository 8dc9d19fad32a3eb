"""Micro-batching sweep: latency and throughput of coalesced one-prompt calls vs no batcher.

50 concurrent workers each loop asking one prompt at a time until 500 are answered, either
through a :class:`~aurora_swarm.MicroBatcher` for each ``(max_batch, max_wait_ms)`` setting, or
without one. The no-batcher baseline is ``pool.post`` (one chat request per prompt, round-robin
over the agents): it is what the same code does without a batcher. A second reference row sends
``pool.post_batch(agent, [prompt])``, the batcher's own route with batches of one, to separate
the cost of the route from the cost of the batcher. The fake fleet answers both routes with the
same latency model. The fleet runs in its own process; settings are interleaved within each
repeat so that drift on a shared machine hits them all alike, and each figure is the median
over the repeats.

Run: ``python -m benchmarks.microbatch_sweep [--repeat 3] [--out benchmarks/results/microbatch]``
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path

import anyio

from aurora_swarm import Endpoint, Response, VLLMPool
from aurora_swarm._microbatch import MicroBatcher
from aurora_swarm.testing import expected_answer

from .fleet_process import fleet_process

MODEL = "fake-model"
MAX_TOKENS = 16
SETTINGS = [(1, 0.0), (2, 10.0), (4, 10.0), (8, 20.0), (16, 20.0), (32, 50.0)]
BASELINE = "post"
REFERENCE = "post_batch x1"
Ask = Callable[[int, str], Awaitable[Response]]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (0..100)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


async def load(ask: Ask, total: int, concurrency: int) -> tuple[float, list[float]]:
    """``concurrency`` workers ask one prompt at a time until ``total`` are answered."""
    latencies: list[float] = []
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < total:
            index = next_index
            next_index += 1
            prompt = f"question {index} about item {index % 97}"
            began = time.perf_counter()
            response = await ask(index, prompt)
            latencies.append(time.perf_counter() - began)
            if response.text != expected_answer(prompt, MAX_TOKENS)[0]:
                raise AssertionError(f"prompt {index} got a wrong answer: {response}")

    began = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(concurrency):
            group.start_soon(worker)
    return time.perf_counter() - began, latencies


async def one_run(endpoints: list[Endpoint], setting: str | tuple[int, float], total: int,
                  concurrency: int, warmup: int) -> dict[str, object]:
    """One measured run (after an unmeasured warm-up on the same route) in a fresh pool."""
    async with VLLMPool(endpoints, model=MODEL, max_tokens=MAX_TOKENS) as pool:
        size = pool.size

        async def post(index: int, prompt: str) -> Response:
            return await pool.post(index % size, prompt, MAX_TOKENS)

        async def single_batch(index: int, prompt: str) -> Response:
            (response,) = await pool.post_batch(index % size, [prompt], MAX_TOKENS)
            return response

        if setting == BASELINE or setting == REFERENCE:
            ask = post if setting == BASELINE else single_batch
            await load(ask, warmup, concurrency)
            before = pool.stats().requests
            elapsed, latencies = await load(ask, total, concurrency)
            return {"elapsed": elapsed, "latencies": latencies, "sizes": Counter(),
                    "requests": pool.stats().requests - before}
        assert isinstance(setting, tuple)
        max_batch, max_wait = setting
        async with MicroBatcher(pool, max_batch=max_batch, max_wait_ms=max_wait,
                                max_tokens=MAX_TOKENS) as warm:
            await load(lambda _i, p: warm.submit(p), warmup, concurrency)
        before = pool.stats().requests
        async with MicroBatcher(pool, max_batch=max_batch, max_wait_ms=max_wait,
                                max_tokens=MAX_TOKENS) as batcher:
            elapsed, latencies = await load(lambda _i, p: batcher.submit(p), total, concurrency)
        stats = batcher.stats()
        assert stats.answered == total and stats.resent == 0, stats
        return {"elapsed": elapsed, "latencies": latencies, "sizes": Counter(stats.batch_sizes),
                "requests": pool.stats().requests - before}


def label(setting: str | tuple[int, float]) -> str:
    if isinstance(setting, str):
        return setting
    return f"batcher ({setting[0]}, {setting[1]:g})"


def summarize(setting: str | tuple[int, float], runs: list[dict[str, object]],
              total: int) -> dict[str, object]:
    """Median over runs of each figure; batch sizes summed over runs."""
    def median(f: Callable[[dict[str, object]], float]) -> float:
        return statistics.median(f(run) for run in runs)

    def lat(q: float) -> Callable[[dict[str, object]], float]:
        return lambda run: 1000 * percentile(run["latencies"], q)

    sizes: Counter[int] = Counter()
    for run in runs:
        sizes.update(run["sizes"])
    batches = sum(sizes.values())
    mean_size = sum(s * c for s, c in sizes.items()) / batches if batches else 1.0
    max_batch = setting[0] if isinstance(setting, tuple) else 1
    return {
        "setting": label(setting),
        "max_batch": max_batch if isinstance(setting, tuple) else "",
        "max_wait_ms": setting[1] if isinstance(setting, tuple) else "",
        "p50_ms": round(median(lat(50)), 2),
        "p95_ms": round(median(lat(95)), 2),
        "p99_ms": round(median(lat(99)), 2),
        "throughput_rps": round(median(lambda run: total / run["elapsed"]), 1),
        "http_requests": round(median(lambda run: run["requests"])),
        "mean_batch_size": round(mean_size, 2),
        "mean_fill": round(mean_size / max_batch, 3),
        "sizes": dict(sorted(sizes.items())),
        "runs": len(runs),
    }


def manifest(args: argparse.Namespace, latency: dict[str, float], started: str) -> dict[str, object]:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    return {
        "benchmark": "benchmarks.microbatch_sweep",
        "date": started,
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--", "src", "benchmarks")),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": {name: version(name) for name in
                     ("aurora-swarm", "anyio", "openai", "httpx", "attrs", "matplotlib")},
        "configuration": {
            "concurrency": args.concurrency, "requests": args.requests,
            "warmup_requests": args.warmup, "repeat": args.repeat, "statistic": "median",
            "endpoints": args.endpoints, "max_tokens": MAX_TOKENS,
            "latency_model": latency, "fleet": "separate process (python -m aurora_swarm.testing)",
            "baseline": "pool.post, one chat request per prompt, round-robin over agents",
            "reference": "pool.post_batch(agent, [prompt]), round-robin over agents",
            "settings": [{"max_batch": b, "max_wait_ms": w} for b, w in SETTINGS],
        },
    }


def plot(rows: list[dict[str, object]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = next(r for r in rows if r["setting"] == BASELINE)
    ref = next(r for r in rows if r["setting"] == REFERENCE)
    sweep = [r for r in rows if r["max_batch"] != ""]
    xs = [int(r["max_batch"]) for r in sweep]

    def axes_for(metric: str, ylabel: str, title: str, name: str, extra: list[str]) -> None:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.plot(xs, [r[metric] for r in sweep], "o-", color="C0", lw=2,
                label="MicroBatcher", zorder=3)
        for key, style in zip(extra, ("s--", "^--"), strict=False):
            ax.plot(xs, [r[key] for r in sweep], style, color="C0", alpha=0.45, lw=1,
                    label=f"MicroBatcher {key.split('_')[0]}")
        for r in sweep:
            ax.annotate(f"{r['max_wait_ms']:g} ms", (int(r["max_batch"]), r[metric]),
                        textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8,
                        color="C0")
        ax.axhline(base[metric], color="C3", ls="--", lw=1.5,
                   label=f"no batcher: pool.post ({base[metric]:g})")
        ax.axhline(ref[metric], color="C2", ls=":", lw=1.5,
                   label=f"post_batch of 1 ({ref[metric]:g})")
        if metric == "throughput_rps":
            ax.axhline(1.5 * base[metric], color="C3", ls=":", lw=1, alpha=0.6,
                       label="1.5 × no batcher (target for max_batch ≥ 4)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("max_batch (label: max_wait_ms)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.set_title(title, fontsize=11)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)

    axes_for("throughput_rps", "throughput (prompts/s)",
             "Throughput, 50 concurrent one-prompt callers, 500 prompts",
             "throughput_vs_batch.png", [])
    axes_for("p95_ms", "latency per prompt (ms)",
             "p95 latency (p50, p99 faint), 50 concurrent callers",
             "p95_vs_batch.png", ["p50_ms", "p99_ms"])

    fig, axs = plt.subplots(2, 3, figsize=(11, 6), sharey=True)
    for ax, r in zip(axs.flat, sweep, strict=True):
        sizes: dict[int, int] = r["sizes"]
        top = int(r["max_batch"])
        batches = sum(sizes.values())
        ax.bar(range(1, top + 1), [100 * sizes.get(s, 0) / batches for s in range(1, top + 1)],
               width=0.85, color="C0")
        ax.set_title(f"max_batch={top}, max_wait={r['max_wait_ms']:g} ms\n"
                     f"mean {r['mean_batch_size']:g} prompts ({100 * r['mean_fill']:.0f}% full)",
                     fontsize=9)
        ax.set_xlim(0.3, top + 0.7)
        ax.set_xlabel("prompts in the batch")
        ax.grid(axis="y", alpha=0.3)
    for ax in axs[:, 0]:
        ax.set_ylabel("% of batches")
    fig.suptitle(f"How full the batches were ({sweep[0]['runs']} runs each)", fontsize=11)
    fig.tight_layout()
    fig.savefig(out / "batch_fullness.png", dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--endpoints", type=int, default=2)
    parser.add_argument("--overhead-ms", type=float, default=4.0,
                        help="per-request overhead of the fake server")
    parser.add_argument("--prompt-ms", type=float, default=10.0,
                        help="time one prompt holds a sequence slot")
    parser.add_argument("--seqs", type=int, default=32, help="sequence slots per endpoint")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/microbatch"))
    args = parser.parse_args()
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    latency = {"request_overhead_s": args.overhead_ms / 1000, "prompt_time_s": args.prompt_ms / 1000,
               "max_concurrent_seqs": args.seqs}
    capacity = args.endpoints * args.seqs / (args.prompt_ms / 1000)
    print(f"fake fleet: {args.endpoints} endpoints in their own process; each request waits "
          f"{args.overhead_ms:g} ms, then each prompt holds one of {args.seqs} sequence slots "
          f"per endpoint for {args.prompt_ms:g} ms (fleet capacity {capacity:.0f} prompts/s)")
    print(f"load: {args.concurrency} concurrent callers, {args.requests} prompts per run "
          f"(after {args.warmup} warm-up), median of {args.repeat} runs, max_tokens={MAX_TOKENS}")
    settings: list[str | tuple[int, float]] = [BASELINE, REFERENCE, *SETTINGS]
    runs: dict[str, list[dict[str, object]]] = {label(s): [] for s in settings}
    with fleet_process(args.endpoints, request_overhead=args.overhead_ms / 1000,
                       prompt_time=args.prompt_ms / 1000,
                       max_concurrent_seqs=args.seqs) as endpoints:
        for rep in range(args.repeat):
            for setting in settings:
                run = anyio.run(one_run, endpoints, setting, args.requests, args.concurrency,
                                args.warmup)
                runs[label(setting)].append(run)
                print(f"  run {rep + 1}/{args.repeat} {label(setting):<22} "
                      f"{args.requests / run['elapsed']:8.1f} prompts/s", flush=True)
    rows = [summarize(s, runs[label(s)], args.requests) for s in settings]
    base = rows[0]
    for row in rows:
        row["vs_no_batcher"] = round(row["throughput_rps"] / base["throughput_rps"], 3)

    header = (f"{'setting':<22}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'prompts/s':>11}"
              f"{'x base':>8}{'requests':>10}{'mean batch':>12}")
    print()
    print(header)
    for r in rows:
        print(f"{r['setting']:<22}{r['p50_ms']:>9.1f}{r['p95_ms']:>9.1f}{r['p99_ms']:>9.1f}"
              f"{r['throughput_rps']:>11.1f}{r['vs_no_batcher']:>8.2f}{r['http_requests']:>10}"
              f"{r['mean_batch_size']:>12.2f}")
    one = next(r for r in rows if r["max_batch"] == 1)
    four_up = [r for r in rows if r["max_batch"] != "" and int(r["max_batch"]) >= 4]
    worst = min(four_up, key=lambda r: r["vs_no_batcher"])
    ok_gain = worst["vs_no_batcher"] >= 1.5
    ok_one = abs(one["vs_no_batcher"] - 1) <= 0.10
    print()
    print(f"check max_batch >= 4: lowest throughput ratio {worst['vs_no_batcher']:.2f}x "
          f"({worst['setting']}), need >= 1.50x: {'PASS' if ok_gain else 'FAIL'}")
    print(f"check max_batch = 1: throughput ratio {one['vs_no_batcher']:.2f}x, "
          f"need within 10% of 1.00x: {'PASS' if ok_one else 'FAIL'}")

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    fields = ["setting", "max_batch", "max_wait_ms", "p50_ms", "p95_ms", "p99_ms",
              "throughput_rps", "vs_no_batcher", "http_requests", "mean_batch_size", "mean_fill",
              "runs"]
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with open(out / "batch_sizes.csv", "w", newline="") as fh:
        writer2 = csv.writer(fh)
        writer2.writerow(["max_batch", "max_wait_ms", "batch_size", "batches"])
        for r in rows:
            if r["max_batch"] != "":
                for size, count in r["sizes"].items():
                    writer2.writerow([r["max_batch"], r["max_wait_ms"], size, count])
    info = manifest(args, latency, started)
    info["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    info["checks"] = {
        "max_batch_ge_4_min_ratio": worst["vs_no_batcher"], "max_batch_ge_4_pass": ok_gain,
        "max_batch_1_ratio": one["vs_no_batcher"], "max_batch_1_pass": ok_one,
    }
    (out / "manifest.json").write_text(json.dumps(info, indent=2) + "\n")
    plot(rows, out)
    print(f"\nwrote {out}/results.csv, batch_sizes.csv, manifest.json, throughput_vs_batch.png, "
          "p95_vs_batch.png, batch_fullness.png")


if __name__ == "__main__":
    main()
