"""The dispatch grid: ``send_all_batched`` beside the equal split and the oracle split.

A grid of fleet shapes on the fake vLLM fleet (its own process, as in the other benchmarks):
8 endpoints of 16 or 256 sequence slots; uniform, two endpoints 3x slower, or one 8x slower;
8 to 4,096 prompts an endpoint; a fresh or a warm pool; 1 caller or 8 concurrent callers (8
tasks on one pool, each with an eighth of the prompts). Each cell runs three methods,
interleaved, median of ``--repeat`` runs:

* ``batched``: ``pool.send_all_batched(prompts)``;
* ``equal``: every endpoint its equal share in ONE ``pool.post_batch`` request, all at once;
* ``oracle``: shares from each endpoint's known slots and speed
  (:func:`benchmarks.grid_split.oracle_split`), each share one ``post_batch`` request.

With 8 callers, each caller splits its own prompts the same way. A fresh pool is made for each
run; a warm pool is made once per cell and method and warmed by one unmeasured call first.

A second part checks small calls on a warm pool: 20 calls of 64 prompts over 8 endpoints of 16
slots, 100 ms a prompt: each call's wall time in waves and the prompts each endpoint got over
the 20 calls, beside the even share.

Only public API is used, so the benchmark runs the same against any dispatcher.

Run: ``python -m benchmarks.dispatch_grid [--quick] [--slots 16 --shape uniform ...] [--out DIR]``
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs

from aurora_swarm import Endpoint, VLLMPool

from .fleet_process import fleet_process
from .grid_report import write_report
from .grid_split import equal_split, oracle_split, split_time

MODEL = "fake-model"
ENDPOINTS, OVERHEAD, MAX_TOKENS = 8, 0.005, 16
SLOTS = (16, 256)
SHAPES: dict[str, dict[int, float]] = {
    "uniform": {},
    "two-3x-slower": {0: 3.0, 1: 3.0},
    "one-8x-slower": {0: 8.0},
}
PER_ENDPOINT = (8, 64, 300, 1024, 4096)
POOLS = ("fresh", "warm")
CALLERS = (1, 8)
METHODS = ("batched", "equal", "oracle")
QUICK = {"slots": [256], "shape": ["uniform", "two-3x-slower"], "per_endpoint": [300],
         "pool": ["fresh"], "callers": [1, 8], "repeat": 3}
BUDGET = 0.8  # seconds of waves a uniform cell's equal split should take at most
SMALL_CALLS, SMALL_SIZE, SMALL_SLOTS, SMALL_PROMPT_TIME = 20, 64, 16, 0.1

Method = Callable[[VLLMPool, Sequence[str]], Awaitable[None]]


def base_prompt_time(slots: int) -> float:
    """Seconds a prompt takes before scaling: 100 ms on few-slot servers, 200 ms on wide ones."""
    return 0.2 if slots >= 128 else 0.1


def prompt_time_for(slots: int, per_endpoint: int, budget: float = BUDGET) -> float:
    """The cell's prompt time: the base one, scaled down so the waves fit in ``budget``.

    ``ceil(per_endpoint / slots)`` waves of the base time, unless that is above ``budget``;
    then ``budget / waves``, rounded down to a tenth of a millisecond.
    """
    waves = -(-per_endpoint // slots)
    base = base_prompt_time(slots)
    if waves * base <= budget:
        return base
    return max(1e-4, int(budget / waves * 1e4) / 1e4)


@attrs.frozen
class Cell:
    """One cell of the grid."""

    slots: int
    shape: str
    per_endpoint: int
    pool: str
    callers: int

    @property
    def prompts(self) -> int:
        return self.per_endpoint * ENDPOINTS

    @property
    def slowness(self) -> list[float]:
        return [SHAPES[self.shape].get(i, 1.0) for i in range(ENDPOINTS)]

    def label(self) -> str:
        return (f"{self.slots} slots, {self.shape}, {self.per_endpoint}/endpoint, "
                f"{self.pool} pool, {self.callers} caller{'s' if self.callers > 1 else ''}")


@attrs.frozen
class Run:
    """One measured call: wall time, requests and prompts answered, per endpoint."""

    wall: float
    requests: list[int]
    prompts: list[int]


def _parts(prompts: Sequence[str], callers: int) -> list[Sequence[str]]:
    sizes = equal_split(len(prompts), callers)
    out, start = [], 0
    for size in sizes:
        out.append(prompts[start:start + size])
        start += size
    return out


def batched(callers: int) -> Method:
    """``send_all_batched`` by ``callers`` concurrent tasks, each with its part of the prompts."""
    async def call(pool: VLLMPool, prompts: Sequence[str]) -> None:
        async with anyio.create_task_group() as group:
            for part in _parts(prompts, callers):
                group.start_soon(_check_batched, pool, part)
    return call


async def _check_batched(pool: VLLMPool, prompts: Sequence[str]) -> None:
    _check(await pool.send_all_batched(prompts, MAX_TOKENS))


def static(callers: int, split: Callable[[int], list[int]]) -> Method:
    """Each caller's prompts split by ``split(n)``, each share one ``post_batch``, all at once."""
    async def call(pool: VLLMPool, prompts: Sequence[str]) -> None:
        async with anyio.create_task_group() as group:
            for part in _parts(prompts, callers):
                start = 0
                for index, share in enumerate(split(len(part))):
                    if share:
                        group.start_soon(_check_post, pool, index, part[start:start + share])
                    start += share
    return call


async def _check_post(pool: VLLMPool, index: int, prompts: Sequence[str]) -> None:
    _check(await pool.post_batch(index, prompts, MAX_TOKENS))


def _check(responses: Sequence[Any]) -> None:
    failed = [i for i, r in enumerate(responses) if not r.success]
    if failed:
        raise RuntimeError(f"{len(failed)} prompts failed (first: {responses[failed[0]].error!r});"
                           " the fleet is not healthy")


def methods(cell: Cell, prompt_time: float) -> dict[str, Method]:
    """The three ways of sending one cell's prompts."""
    slots, slowness = [cell.slots] * ENDPOINTS, cell.slowness
    return {
        "batched": batched(cell.callers),
        "equal": static(cell.callers, lambda n: equal_split(n, ENDPOINTS)),
        "oracle": static(cell.callers, lambda n: oracle_split(n, slots, slowness, prompt_time,
                                                              OVERHEAD)),
    }


async def timed(pool: VLLMPool, method: Method, prompts: Sequence[str], limit: float) -> Run:
    """Run ``method`` once on ``pool`` and measure it."""
    before = pool.stats()
    start = time.perf_counter()
    with anyio.fail_after(limit):
        await method(pool, prompts)
    wall = time.perf_counter() - start
    delta = pool.stats() - before
    return Run(wall, [e.requests for e in delta.endpoints], [e.answered for e in delta.endpoints])


async def settle(rest: float = 0.15) -> None:
    """Let the fleet finish what called-off requests left, and collect garbage first."""
    gc.collect()
    await anyio.sleep(rest)


async def run_cell(endpoints: list[Endpoint], cell: Cell, prompt_time: float, repeat: int,
                   limit: float, told_slots: bool = False) -> dict[str, list[Run]]:
    """Every method of ``cell``, ``repeat`` runs each, interleaved (the order rotates). With
    ``told_slots`` the pools are told the servers' slots (``max_num_seqs``), as a hostfile tag
    would."""
    options: dict[str, Any] = {"max_num_seqs": cell.slots} if told_slots else {}
    prompts = [f"prompt {i} of the grid" for i in range(cell.prompts)]
    calls = methods(cell, prompt_time)
    runs: dict[str, list[Run]] = {name: [] for name in METHODS}
    async with contextlib.AsyncExitStack() as stack:
        warm: dict[str, VLLMPool] = {}
        if cell.pool == "warm":
            for name in METHODS:
                warm[name] = await stack.enter_async_context(
                    VLLMPool(endpoints, model=MODEL, max_tokens=MAX_TOKENS, **options))
                with anyio.fail_after(limit):
                    await calls[name](warm[name], prompts)  # the warm-up call, not measured
        for r in range(repeat):
            for name in METHODS[r % 3:] + METHODS[:r % 3]:
                await settle()
                if cell.pool == "warm":
                    runs[name].append(await timed(warm[name], calls[name], prompts, limit))
                    continue
                async with VLLMPool(endpoints, model=MODEL, max_tokens=MAX_TOKENS,
                                    **options) as pool:
                    runs[name].append(await timed(pool, calls[name], prompts, limit))
    return runs


def row(cell: Cell, prompt_time: float, runs: dict[str, list[Run]]) -> dict[str, Any]:
    """The CSV row of one cell."""
    wall = {name: statistics.median(r.wall for r in runs[name]) for name in METHODS}
    mine = runs["batched"]
    slots, slowness = [cell.slots] * ENDPOINTS, cell.slowness
    model = split_time(oracle_split(cell.prompts, slots, slowness, prompt_time, OVERHEAD),
                       slots, slowness, prompt_time, OVERHEAD)
    return {
        **attrs.asdict(cell), "prompts": cell.prompts, "prompt_time_s": prompt_time,
        "repeat": len(mine),
        "batched_s": round(wall["batched"], 4), "equal_s": round(wall["equal"], 4),
        "oracle_s": round(wall["oracle"], 4),
        "x_equal": round(wall["batched"] / wall["equal"], 3),
        "x_oracle": round(wall["batched"] / wall["oracle"], 3),
        "equal_x_oracle": round(wall["equal"] / wall["oracle"], 3),
        "oracle_model_s": round(model, 4),
        "requests_max": statistics.median(max(r.requests) for r in mine),
        "requests": statistics.median(sum(r.requests) for r in mine),
        "prompts_min": statistics.median(min(r.prompts) for r in mine),
        "prompts_max": statistics.median(max(r.prompts) for r in mine),
        "batched_runs": " ".join(f"{r.wall:.3f}" for r in mine),
        "equal_runs": " ".join(f"{r.wall:.3f}" for r in runs["equal"]),
        "oracle_runs": " ".join(f"{r.wall:.3f}" for r in runs["oracle"]),
    }


def run_grid(cells: list[Cell], args: argparse.Namespace,
             on_row: Callable[[dict[str, Any]], None]) -> None:
    """Run the cells, one fleet per (slots, shape, prompts an endpoint)."""
    groups: dict[tuple[int, str, int], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.slots, cell.shape, cell.per_endpoint), []).append(cell)
    done, started = 0, time.monotonic()
    for (slots, shape, per_endpoint), group in groups.items():
        prompt_time = prompt_time_for(slots, per_endpoint, args.budget)
        with fleet_process(ENDPOINTS, request_overhead=OVERHEAD, prompt_time=prompt_time,
                           max_concurrent_seqs=slots, slow=SHAPES[shape]) as endpoints:
            for cell in group:
                runs = anyio.run(run_cell, endpoints, cell, prompt_time, args.repeat,
                                 args.run_timeout, args.told_slots)
                done += 1
                result = row(cell, prompt_time, runs)
                on_row(result)
                print(f"[{done}/{len(cells)}, {time.monotonic() - started:.0f} s] "
                      f"{cell.label()}, {prompt_time * 1000:g} ms a prompt: batched "
                      f"{result['batched_s']:.3f} s, equal {result['equal_s']:.3f} s, oracle "
                      f"{result['oracle_s']:.3f} s -> {result['x_equal']:.2f}x equal, "
                      f"{result['x_oracle']:.2f}x oracle; {result['requests_max']:g} requests "
                      f"an endpoint at most, {result['prompts_min']:g}-{result['prompts_max']:g}"
                      " prompts an endpoint", flush=True)


async def _small_calls(endpoints: list[Endpoint], calls: int, size: int,
                       limit: float) -> dict[str, Any]:
    prompts = [f"small call prompt {i}" for i in range(size)]
    kinds = {"batched": batched(1), "equal": static(1, lambda n: equal_split(n, ENDPOINTS))}
    walls: dict[str, list[float]] = {name: [] for name in kinds}
    totals = [0] * ENDPOINTS
    async with VLLMPool(endpoints, model=MODEL, max_tokens=MAX_TOKENS) as mine, \
            VLLMPool(endpoints, model=MODEL, max_tokens=MAX_TOKENS) as equal:
        pools = {"batched": mine, "equal": equal}
        for name, call in kinds.items():
            await call(pools[name], prompts)  # the warm-up call, not measured
        for _ in range(calls):
            for name, call in kinds.items():
                await settle(0.05)
                run = await timed(pools[name], call, prompts, limit)
                walls[name].append(run.wall)
                if name == "batched":
                    totals = [t + p for t, p in zip(totals, run.prompts, strict=True)]
    return {"walls": walls, "prompts": totals}


def small_calls(args: argparse.Namespace) -> dict[str, Any]:
    """The warm-pool small-call check (see the module docstring)."""
    with fleet_process(ENDPOINTS, request_overhead=OVERHEAD, prompt_time=SMALL_PROMPT_TIME,
                       max_concurrent_seqs=SMALL_SLOTS) as endpoints:
        got = anyio.run(_small_calls, endpoints, SMALL_CALLS, SMALL_SIZE, args.run_timeout)
    waves = {name: statistics.median(w) / SMALL_PROMPT_TIME for name, w in got["walls"].items()}
    even = SMALL_CALLS * SMALL_SIZE / ENDPOINTS
    result = {
        "calls": SMALL_CALLS, "prompts_a_call": SMALL_SIZE, "endpoints": ENDPOINTS,
        "slots": SMALL_SLOTS, "prompt_time_s": SMALL_PROMPT_TIME,
        "batched_waves_median": round(waves["batched"], 3),
        "equal_waves_median": round(waves["equal"], 3),
        "batched_call_s": [round(w, 4) for w in got["walls"]["batched"]],
        "equal_call_s": [round(w, 4) for w in got["walls"]["equal"]],
        "prompts_per_endpoint": got["prompts"], "even_share": even,
        "prompts_min": min(got["prompts"]), "prompts_max": max(got["prompts"]),
    }
    print(f"warm small calls: {SMALL_CALLS} calls of {SMALL_SIZE} prompts, {ENDPOINTS} endpoints "
          f"x {SMALL_SLOTS} slots, {SMALL_PROMPT_TIME * 1000:g} ms a prompt: median call "
          f"{waves['batched']:.2f} waves (equal split {waves['equal']:.2f}); prompts an endpoint "
          f"over the calls {result['prompts_min']}-{result['prompts_max']} (even share {even:g})",
          flush=True)
    return result


def checks(rows: list[dict[str, Any]], small: dict[str, Any] | None) -> list[str]:
    """The issue's bars, one line each: PASS or FAIL with the measured figures."""
    lines = []

    def worst(selected: list[dict[str, Any]], key: str, bar: float, what: str) -> None:
        if not selected:
            lines.append(f"check {what}: no cell measured")
            return
        top = max(selected, key=lambda r: r[key])
        above = sum(1 for r in selected if r[key] > bar)
        lines.append(f"check {what}: {'PASS' if above == 0 else 'FAIL'} (worst {top[key]:.2f}x "
                     f"at {_cell_text(top)}; {above} of {len(selected)} cells above {bar}x)")

    uniform = [r for r in rows if r["shape"] == "uniform"]
    worst(uniform, "x_equal", 1.08, "uniform cells, send_all_batched <= 1.08x the equal split")
    worst(rows, "x_oracle", 1.15, "every cell, send_all_batched <= 1.15x the oracle split")
    single = [r for r in uniform if int(r["callers"]) == 1]
    if single:
        top = max(single, key=lambda r: float(r["requests_max"]))
        over = sum(1 for r in single if float(r["requests_max"]) > 8)
        lines.append(f"check uniform cells, 1 caller, at most 8 requests an endpoint: "
                     f"{'PASS' if over == 0 else 'FAIL'} (most {float(top['requests_max']):g} "
                     f"at {_cell_text(top)}; {over} of {len(single)} cells above 8)")
    if small is not None:
        waves = small["batched_waves_median"]
        lines.append(f"check warm small calls, median call <= 1.3 waves: "
                     f"{'PASS' if waves <= 1.3 else 'FAIL'} ({waves:.2f} waves; equal split "
                     f"{small['equal_waves_median']:.2f})")
        ratio = small["prompts_max"] / small["even_share"]
        lines.append(f"check warm small calls, no endpoint above 2x its even share: "
                     f"{'PASS' if ratio <= 2 else 'FAIL'} ({small['prompts_min']}-"
                     f"{small['prompts_max']} prompts an endpoint, even share "
                     f"{small['even_share']:g}: {ratio:.2f}x)")
    return lines


def _cell_text(r: dict[str, Any]) -> str:
    return (f"{r['slots']} slots, {r['shape']}, {r['per_endpoint']}/endpoint, {r['pool']}, "
            f"{r['callers']} caller(s)")


def _list(kind: Callable[[str], Any], allowed: Sequence[Any] | None = None
          ) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            values = [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}"
                                             ) from None
        bad = [v for v in values if (allowed is not None and v not in allowed)
               or (isinstance(v, int) and v < 1)]
        if bad or not values:
            choices = f" (one of {', '.join(map(str, allowed))})" if allowed else " (>= 1)"
            raise argparse.ArgumentTypeError(f"bad value(s) {bad or text!r}{choices}")
        return values
    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.dispatch_grid", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a small subset for CI: 256 slots, uniform and two 3x slower, "
                        "300 prompts an endpoint, fresh pool, 1 and 8 callers, 3 runs; and the "
                        "small-call check (16 slots)")
    parser.add_argument("--slots", type=_list(int), help="sequence slots (default 16,256)")
    parser.add_argument("--shape", type=_list(str, list(SHAPES)),
                        help=f"fleet shapes (default {','.join(SHAPES)})")
    parser.add_argument("--per-endpoint", type=_list(int),
                        help="prompts an endpoint (default 8,64,300,1024,4096)")
    parser.add_argument("--pool", type=_list(str, POOLS), help="fresh, warm (default both)")
    parser.add_argument("--callers", type=_list(int), help="concurrent callers (default 1,8)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per method (default 5)")
    parser.add_argument("--budget", type=float, default=BUDGET,
                        help="seconds of waves a cell may take before its prompt time is scaled "
                        "down (default %(default)s)")
    parser.add_argument("--run-timeout", type=float, default=120.0,
                        help="seconds a run may take (default %(default)s)")
    parser.add_argument("--told-slots", action="store_true",
                        help="tell the pools the servers' slots (max_num_seqs), as a hostfile "
                        "tag would; by default they learn them")
    parser.add_argument("--no-grid", action="store_true", help="only the small-call check")
    parser.add_argument("--no-small-calls", action="store_true", help="skip the small-call check")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when a check fails")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/dispatch_grid"))
    parser.add_argument("--report-only", type=Path, default=None, metavar="DIR",
                        help="rebuild table, heat map and checks from DIR/results.csv")
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    if args.budget <= 0 or args.run_timeout <= 0:
        parser.error("--budget and --run-timeout must be > 0")
    preset = QUICK if args.quick else {}
    defaults = {"slots": list(SLOTS), "shape": list(SHAPES), "per_endpoint": list(PER_ENDPOINT),
                "pool": list(POOLS), "callers": list(CALLERS), "repeat": 5}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, preset.get(key, value))
    return args


def plan(args: argparse.Namespace) -> list[Cell]:
    """The cells the options select, grouped so each fleet starts once."""
    return [Cell(s, shape, n, pool, c) for s in args.slots for shape in args.shape
            for n in args.per_endpoint for pool in args.pool for c in args.callers]


def manifest(args: argparse.Namespace, cells: list[Cell], started: float) -> dict[str, Any]:
    """Conditions, date, machine."""
    def git(*command: str) -> str:
        try:
            return subprocess.run(["git", *command], capture_output=True, text=True,
                                  check=False).stdout.strip()
        except OSError:
            return ""
    pairs = sorted({(c.slots, c.per_endpoint) for c in cells})
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(time.monotonic() - started, 1),
        "command": " ".join(["python -m benchmarks.dispatch_grid", *sys.argv[1:]]),
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()),
        "git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain")),
        "endpoints": ENDPOINTS, "request_overhead_s": OVERHEAD, "max_tokens": MAX_TOKENS,
        "shapes": SHAPES, "repeat": args.repeat, "told_slots": args.told_slots,
        "budget_s": args.budget,
        "base_prompt_time_s": {str(s): base_prompt_time(s) for s in sorted(set(args.slots))},
        "prompt_time_s": {f"{s} slots, {n}/endpoint": prompt_time_for(s, n, args.budget)
                          for s, n in pairs},
        "cells": len(cells),
        "methods": {
            "batched": "pool.send_all_batched(prompts), each caller its part",
            "equal": "every endpoint its equal share in one post_batch, all at once",
            "oracle": "shares minimising max(overhead + ceil(share/slots) * prompt_time * "
                      "slowness), each one post_batch",
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only is not None:
        return write_report(args.report_only, None, checks, strict=args.strict)
    started = time.monotonic()
    cells = [] if args.no_grid else plan(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    print(f"{len(cells)} cells, {args.repeat} runs of each method, interleaved; "
          f"{ENDPOINTS} fake endpoints (own process), {OVERHEAD * 1000:g} ms a request; "
          f"results in {out}", flush=True)
    rows: list[dict[str, Any]] = []

    def keep(result: dict[str, Any]) -> None:
        rows.append(result)
        with (out / "results.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(result))
            writer.writeheader()
            writer.writerows(rows)

    run_grid(cells, args, keep)
    small = None if args.no_small_calls else small_calls(args)
    info = manifest(args, cells, started)
    info["small_calls"] = small
    (out / "manifest.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return write_report(out, rows, checks, strict=args.strict)


if __name__ == "__main__":
    raise SystemExit(main())
