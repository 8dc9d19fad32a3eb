"""Batch vs non-batch: HTTP requests, wall time, throughput, per-prompt latency, client CPU.

Runs sweeps over prompt count, endpoint count and chunk size on the fake fleet (a separate
process, latency modelled on a GPU vLLM server) or on real vLLM servers, and writes
``results.csv``, ``manifest.json``, ``table.md``/``table.rst`` and PNG plots into ``--out``.

Run::

    python -m benchmarks.harness                      # full run on the fake fleet (~11 min)
    python -m benchmarks.harness --quick              # small sizes (~1-2 min), e.g. for CI
    python -m benchmarks.harness --target vllm --hostfile H --model M
    python -m benchmarks.harness --report-only DIR   # tables and plots again from DIR/results.csv
    python -m benchmarks.harness --update-readme benchmarks/results/harness  # into README, docs

See ``benchmarks/README.md`` for what is measured and how.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs

from aurora_swarm import Chunking, Endpoint, parse_hostfile

from . import report
from .fleet_process import fleet_process
from .measure import MODES, Mode, RunResult, make_prompts, measure
from .progress import Progress

FAKE_MODEL = "fake-model"
ROOT = Path(__file__).resolve().parent.parent


@attrs.frozen
class Latency:
    """The fake fleet's latency model (see ``aurora_swarm.testing.LatencyModel``)."""

    request_overhead: float = 0.005
    prompt_time: float = 0.2
    token_time: float = 0.0
    max_concurrent_seqs: int = 256

    def seconds_per_prompt(self, max_tokens: int) -> float:
        return self.prompt_time + self.token_time * max_tokens


INSTANT = Latency(0.0, 0.0, 0.0, 0)
# The default: a GPU vLLM server (continuous batching over many sequence slots).
GPU_LIKE = Latency()


@attrs.frozen
class Condition:
    """One thing to measure (repeated ``repeat`` times)."""

    mode: Mode
    prompts: int
    endpoints: int
    chunk: int | None = None  # None: adaptive chunking (the default)
    latency: Latency = Latency()
    sweeps: tuple[str, ...] = ()
    warm: bool = False  # measure a second call on the same pool (the first runs unmeasured)

    @property
    def label(self) -> str:
        chunk = "adaptive" if self.chunk is None else f"chunk {self.chunk}"
        pool = ", warm pool" if self.warm else ""
        return (f"{'+'.join(self.sweeps)}: {self.mode}, {self.prompts:,} prompts, "
                f"{self.endpoints:,} endpoints, {chunk}{pool}")


# -- configuration -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.harness",
        description="Compare batch and non-batch modes on the fake fleet or real vLLM servers.")
    ints = _int_list
    p.add_argument("--quick", action="store_true", help="small sizes, one run each (~1-2 min)")
    p.add_argument("--target", choices=["fake", "vllm"], default="fake")
    p.add_argument("--hostfile", help="vLLM servers (--target vllm)")
    p.add_argument("--model", help="served model name (--target vllm)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "harness",
                   help="results directory (default benchmarks/out/harness)")
    p.add_argument("--update-readme", type=Path, nargs="+", metavar="RESULTS_DIR",
                   help="only splice RESULTS_DIR/table.md (one fake-fleet run and/or one "
                        "real-vLLM run) into README.md and docs/benchmarks.rst")
    p.add_argument("--report-only", type=Path, metavar="RESULTS_DIR",
                   help="only rebuild table.md/table.rst and the PNGs from RESULTS_DIR's "
                        "results.csv and manifest.json")
    p.add_argument("--sweeps", type=lambda s: s.split(","),
                   help="comma-separated subset of prompts,endpoints,chunk,client_cpu")
    g = p.add_argument_group("sizes (defaults depend on --quick and --target)")
    g.add_argument("--prompts", type=ints, help="prompt sweep, e.g. 100,1000,10000,100000")
    g.add_argument("--headline-endpoints", type=int,
                   help="endpoints of the prompt and chunk sweeps (default 100)")
    g.add_argument("--headline-prompts", type=int, help="prompts of the headline (10000)")
    g.add_argument("--endpoints", type=ints, help="endpoint sweep, e.g. 1,10,100,1000")
    g.add_argument("--endpoint-sweep-prompts", type=int)
    g.add_argument("--chunk-sizes", type=ints, help="chunk sweep, e.g. 10,30,100,300,1000")
    g.add_argument("--chunk-sweep-prompts", type=int)
    g.add_argument("--client-cpu-prompts", type=int, help="batch mode (20000)")
    g.add_argument("--client-cpu-nonbatch-prompts", type=int, help="non-batch mode (1000)")
    g.add_argument("--max-tokens", type=int, default=16)
    g.add_argument("--repeat", type=int, help="runs per condition; medians are reported (3)")
    g = p.add_argument_group("fake fleet")
    g.add_argument("--request-overhead", type=float, default=GPU_LIKE.request_overhead,
                   metavar="S", help="seconds per request (0.005)")
    g.add_argument("--prompt-time", type=float, default=GPU_LIKE.prompt_time, metavar="S",
                   help="seconds a prompt holds a sequence slot (0.2)")
    g.add_argument("--token-time", type=float, default=GPU_LIKE.token_time, metavar="S")
    g.add_argument("--max-concurrent-seqs", type=int, default=GPU_LIKE.max_concurrent_seqs,
                   metavar="N", help="sequence slots per endpoint (256)")
    g.add_argument("--slow", action="append", default=[], metavar="I:F",
                   help="endpoint I is F times slower (repeatable)")
    g.add_argument("--fault-rate", type=float, default=0.0,
                   help="probability of a transient fault per request")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("time limits")
    g.add_argument("--nonbatch-max", type=int,
                   help="largest prompt count run in non-batch mode (10000)")
    g.add_argument("--budget", type=float, default=30.0, metavar="S",
                   help="skip a run whose ideal time on the latency model alone exceeds S")
    g.add_argument("--slow-run", type=float, default=30.0, metavar="S",
                   help="a run taking longer than S is not repeated")
    g.add_argument("--run-timeout", type=float, default=150.0, metavar="S",
                   help="cut a run off after S seconds")
    args = p.parse_args(argv)
    _defaults(args)
    return args


def _int_list(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x]


def _defaults(args: argparse.Namespace) -> None:
    vllm = args.target == "vllm"
    quick = args.quick
    table: dict[str, Any] = {
        "prompts": ([256] if quick else [64, 256, 1024]) if vllm
        else [100, 1000, 2000] if quick else [100, 1000, 10000, 100000],
        "headline_endpoints": 20 if quick else 100,
        "headline_prompts": 256 if vllm else 2000 if quick else 10000,
        "endpoints": [1, 10, 100] if quick else [1, 10, 100, 1000],
        "endpoint_sweep_prompts": 1000 if quick else 10000,
        "chunk_sizes": [10, 50, 100, 500] if quick else [10, 30, 100, 300, 1000],
        "chunk_sweep_prompts": 2000 if quick else 10000,
        "client_cpu_prompts": 5000 if quick else 20000,
        "client_cpu_nonbatch_prompts": 300 if quick else 1000,
        "repeat": 3 if vllm else 1 if quick else 3,
        "nonbatch_max": 10000,
        "sweeps": ["prompts"] if vllm else ["prompts", "endpoints", "chunk", "client_cpu"],
    }
    for key, value in table.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if vllm and not (args.hostfile and args.model) and not args.update_readme:
        raise SystemExit("--target vllm needs --hostfile and --model")


def latency_of(args: argparse.Namespace) -> Latency:
    return Latency(args.request_overhead, args.prompt_time, args.token_time,
                   args.max_concurrent_seqs)


def slow_of(args: argparse.Namespace) -> dict[int, float]:
    out = {}
    for item in args.slow:
        index, _, factor = item.partition(":")
        out[int(index)] = float(factor)
    return out


# -- the plan ----------------------------------------------------------------------------------


def plan(args: argparse.Namespace, servers: int | None = None) -> list[Condition]:
    """Every condition to measure, duplicates merged (their sweep names joined)."""
    lat = latency_of(args)
    wanted: list[Condition] = []
    if args.target == "vllm":
        assert servers is not None
        for n in args.prompts:
            wanted += [Condition(mode, n, servers, None, INSTANT, ("prompts",)) for mode in MODES]
        return _merge(wanted)
    m = args.headline_endpoints
    if "prompts" in args.sweeps:
        for n in args.prompts:
            wanted += [Condition(mode, n, m, None, lat, ("prompts",)) for mode in MODES]
    if "endpoints" in args.sweeps:
        for e in args.endpoints:
            wanted += [Condition(mode, args.endpoint_sweep_prompts, e, None, lat, ("endpoints",))
                       for mode in MODES]
    if "chunk" in args.sweeps:
        n = args.chunk_sweep_prompts
        wanted.append(Condition("batch", n, m, None, lat, ("chunk",)))
        wanted += [Condition("batch", n, m, c, lat, ("chunk",)) for c in args.chunk_sizes]
    if "client_cpu" in args.sweeps:
        for warm in (False, True):
            wanted += [Condition("batch", args.client_cpu_prompts, 100, None, INSTANT,
                                 ("client_cpu",), warm),
                       Condition("non-batch", args.client_cpu_nonbatch_prompts, 100, None,
                                 INSTANT, ("client_cpu",), warm)]
    return _merge(wanted)


def _merge(conditions: list[Condition]) -> list[Condition]:
    merged: dict[Condition, Condition] = {}
    for c in conditions:
        key = attrs.evolve(c, sweeps=())
        old = merged.get(key)
        sweeps = (*old.sweeps, *c.sweeps) if old else c.sweeps
        merged[key] = attrs.evolve(c, sweeps=tuple(dict.fromkeys(sweeps)))
    return list(merged.values())


def ideal_seconds(c: Condition, max_tokens: int) -> float:
    """Least time the latency model alone allows (the client infinitely fast)."""
    lat = c.latency
    per_prompt = lat.seconds_per_prompt(max_tokens)
    if per_prompt == 0 and lat.request_overhead == 0:
        return 0.0
    slots = lat.max_concurrent_seqs or math.inf
    if c.mode == "batch":
        waves = math.ceil(c.prompts / (c.endpoints * slots)) if slots != math.inf else 1
        return lat.request_overhead + waves * per_prompt
    # Non-batch: the pool's default concurrency, spread round-robin over the endpoints.
    workers = min(c.prompts, max(2 * c.endpoints, min(32 * c.endpoints, 2048)))
    in_flight = min(workers / c.endpoints, slots)
    return c.prompts / (c.endpoints * in_flight / (lat.request_overhead + per_prompt))


def skip_reason(c: Condition, args: argparse.Namespace) -> str | None:
    if c.mode == "non-batch" and c.prompts > args.nonbatch_max and "client_cpu" not in c.sweeps:
        return (f"skipped: {c.prompts:,} one-prompt requests (non-batch runs only up to "
                f"--nonbatch-max {args.nonbatch_max:,} prompts)")
    ideal = ideal_seconds(c, args.max_tokens)
    if ideal > args.budget:
        return (f"skipped: the latency model alone needs {ideal:.0f} s "
                f"(over --budget {args.budget:g} s)")
    return None


# -- running -----------------------------------------------------------------------------------


def row_of(c: Condition, result: RunResult | None, args: argparse.Namespace, repeat: int,
           *, status: str = "", note: str = "", model: str = FAKE_MODEL) -> dict[str, Any]:
    lat = c.latency
    row: dict[str, Any] = {
        "target": args.target, "sweep": "+".join(c.sweeps), "mode": c.mode,
        "prompts": c.prompts, "endpoints": c.endpoints,
        "chunk_size": "auto" if c.chunk is None else c.chunk,
        "pool": "warm" if c.warm else "fresh", "repeat": repeat,
        "request_overhead_s": lat.request_overhead if args.target == "fake" else "",
        "prompt_time_s": lat.prompt_time if args.target == "fake" else "",
        "token_time_s": lat.token_time if args.target == "fake" else "",
        "max_concurrent_seqs": lat.max_concurrent_seqs if args.target == "fake" else "",
        "slow": " ".join(args.slow) if args.target == "fake" and lat != INSTANT else "",
        "fault_rate": args.fault_rate if args.target == "fake" and lat != INSTANT else "",
        "max_tokens": args.max_tokens, "model": model,
        "started_at": report.now().isoformat(timespec="seconds"),
        "status": status, "note": note,
    }
    if result is not None:
        row.update(attrs.asdict(result))
        row["prompts"] = c.prompts
        row["prompts_per_s"] = result.prompts_per_s
        row["cpu_us_per_prompt"] = result.cpu_us_per_prompt
        if note:
            row["note"] = "; ".join(x for x in (result.note, note) if x)
    return row


async def _measured(endpoints: Sequence[Endpoint], c: Condition, prompts: list[str],
                    args: argparse.Namespace, progress: Progress, model: str) -> RunResult:
    async with anyio.create_task_group() as group:
        group.start_soon(progress.ticker)
        result = await measure(
            endpoints, prompts, mode=c.mode, model=model, max_tokens=args.max_tokens,
            chunking=Chunking(chunk_size=c.chunk) if c.chunk is not None else None,
            timeout=args.run_timeout, on_start=progress.attach, warm=c.warm)
        group.cancel_scope.cancel()
    return result


@contextlib.contextmanager
def _fleet(args: argparse.Namespace, endpoints: int, lat: Latency) -> Iterator[list[Endpoint]]:
    instant = lat == INSTANT
    with fleet_process(
        endpoints, request_overhead=lat.request_overhead, prompt_time=lat.prompt_time,
        token_time=lat.token_time, max_concurrent_seqs=lat.max_concurrent_seqs,
        slow=None if instant else slow_of(args), fault_rate=0.0 if instant else args.fault_rate,
        seed=args.seed,
    ) as eps:
        yield eps


def run_all(args: argparse.Namespace, conditions: list[Condition], progress: Progress,
            endpoints: list[Endpoint] | None = None, model: str = FAKE_MODEL
            ) -> list[dict[str, Any]]:
    """Measure every condition ``args.repeat`` times, interleaved, one fleet per fleet shape."""
    rows: list[dict[str, Any]] = []
    runnable = []
    for c in conditions:
        reason = skip_reason(c, args) if args.target == "fake" else None
        if reason:
            rows.append(row_of(c, None, args, 0, status="skipped", note=reason))
            progress.message(f"{c.label}: {reason}")
        else:
            runnable.append(c)
    progress.total_runs = len(runnable) * args.repeat
    fleets: dict[tuple[int, Latency], list[Condition]] = {}
    for c in runnable:
        fleets.setdefault((c.endpoints, c.latency), []).append(c)
    for (size, lat), group in fleets.items():
        context = (contextlib.nullcontext(endpoints) if endpoints is not None
                   else _fleet(args, size, lat))
        with context as eps:
            assert eps is not None
            _warm_up(eps, args, model)
            rows += _run_group(eps, group, args, progress, model)
    return rows


def _warm_up(eps: Sequence[Endpoint], args: argparse.Namespace, model: str) -> None:
    """Unmeasured calls on a few endpoints: imports, first connections, the servers' caches."""
    few = list(eps[:4])
    for mode in MODES:
        prompts = make_prompts(4 * len(few))
        result = anyio.run(lambda: measure(few, prompts, mode=mode, model=model,  # noqa: B023
                                           max_tokens=args.max_tokens, timeout=args.run_timeout))
        if result.answered != len(prompts):
            raise SystemExit(f"warm-up failed: {result.answered} of {len(prompts)} answered "
                             f"({result.status} {result.note}); are the servers up?")


def _run_group(eps: Sequence[Endpoint], group: list[Condition], args: argparse.Namespace,
               progress: Progress, model: str) -> list[dict[str, Any]]:
    rows = []
    once: set[Condition] = set()
    prompts = {n: make_prompts(n) for n in {c.prompts for c in group}}
    for repeat in range(1, args.repeat + 1):
        for c in group:
            if c in once:
                continue
            progress.begin(f"{c.label}, run {repeat}")
            result = anyio.run(_measured, eps, c, prompts[c.prompts], args, progress, model)
            note = ""
            if repeat == 1 and args.repeat > 1 and result.wall_s > args.slow_run:
                once.add(c)
                progress.total_runs -= args.repeat - 1
                note = f"not repeated: took over --slow-run {args.slow_run:g} s"
            rows.append(row_of(c, result, args, repeat, status=result.status, note=note,
                               model=model))
            progress.message(_summary(c, result, repeat))
    return rows


def _summary(c: Condition, r: RunResult, repeat: int) -> str:
    text = (f"{c.label}, run {repeat}: {r.status}, {r.requests:,} requests, {r.wall_s:.2f} s, "
            f"{r.prompts_per_s:,.0f} prompts/s, p95 {r.p95_s:.3f} s, "
            f"client CPU {r.cpu_us_per_prompt:,.1f} µs/prompt")
    if r.failed:
        text += f", {r.failed:,} failed"
    if r.note:
        text += f" ({r.note})"
    return text


# -- main --------------------------------------------------------------------------------------


def config_of(args: argparse.Namespace, servers: int | None) -> dict[str, Any]:
    lat = latency_of(args)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
              if k != "update_readme"}
    config.update(latency=attrs.asdict(lat), slow=slow_of(args), servers=servers,
                  slow_run_s=args.slow_run, date=report.now().isoformat(timespec="seconds"))
    if args.target == "vllm":
        config["headline_endpoints"] = servers
    return config


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.update_readme:
        for results in args.update_readme:
            report.update_readme(results, ROOT / "README.md", ROOT / "docs" / "benchmarks.rst")
            print(f"README.md and docs/benchmarks.rst updated from {results}")
        return 0
    if args.report_only:
        return report_only(args.report_only)
    started = report.now()
    endpoints = parse_hostfile(args.hostfile) if args.target == "vllm" else None
    servers = len(endpoints) if endpoints is not None else None
    model = args.model if args.target == "vllm" else FAKE_MODEL
    config = config_of(args, servers)
    conditions = plan(args, servers)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"aurora_swarm benchmark harness: target {args.target}, {len(conditions)} conditions, "
          f"up to {args.repeat} runs each; results in {args.out}")
    print(report.describe_conditions(config).replace("`", ""))
    progress = Progress(len(conditions) * args.repeat)
    t0 = time.monotonic()
    try:
        rows = run_all(args, conditions, progress, endpoints, model)
    finally:
        progress.close()
    finished = report.now()
    report.write_csv(args.out / "results.csv", rows)
    extra = {"hostfile_endpoints": [e.base_url for e in endpoints]} if endpoints else None
    (args.out / "manifest.json").write_text(
        json.dumps(report.manifest(config, started=started, finished=finished, extra=extra),
                   indent=2) + "\n")
    report.write_tables(args.out, rows, config)
    pngs = report.plot(args.out, rows, config)
    print(f"\nDone in {time.monotonic() - t0:.0f} s. Wrote results.csv, manifest.json, "
          f"table.md, table.rst, {', '.join(pngs)} to {args.out}\n")
    print((args.out / "table.md").read_text())
    return _verdict(rows, args, config)


def report_only(results: Path) -> int:
    """Tables and plots again from a run's files (after changing how they are presented)."""
    rows = report.read_csv(results / "results.csv")
    config = json.loads((results / "manifest.json").read_text())["config"]
    report.write_tables(results, rows, config)
    pngs = report.plot(results, rows, config)
    print(f"Wrote table.md, table.rst, {', '.join(pngs)} to {results}\n")
    print((results / "table.md").read_text())
    return 0


def _verdict(rows: list[dict[str, Any]], args: argparse.Namespace, config: dict[str, Any]) -> int:
    """Print the headline check (the issue's done-when items); 0 whatever the verdict."""
    line = report.headline(rows, args.headline_prompts, config.get("headline_endpoints"))
    if line is None:
        print("headline: not measured (both modes needed at "
              f"{args.headline_prompts:,} prompts)")
        return 0
    print("HEADLINE " + line)
    med = {r["mode"]: r for r in report.pick(
        report.medians(rows), prompts=args.headline_prompts, chunk_size="auto",
        endpoints=config.get("headline_endpoints"))}
    b, n = med["batch"], med["non-batch"]
    if args.target == "fake" and (args.headline_prompts, config.get("headline_endpoints")) \
            != (10000, 100):
        print("check: the issue's check is at 10,000 prompts over 100 endpoints (a full run)")
    elif args.target == "fake":
        fewer = n["requests"] / b["requests"]
        print(f"check: batch sends >= 100x fewer requests: {'PASS' if fewer >= 100 else 'FAIL'} "
              f"({fewer:,.0f}x); batch is faster: "
              f"{'PASS' if b['wall_s'] < n['wall_s'] else 'FAIL'}")
    else:
        ratio = b["prompts_per_s"] / n["prompts_per_s"]
        print(f"check: batch throughput >= non-batch: {'PASS' if ratio >= 1 else 'FAIL'} "
              f"(ratio {ratio:.2f}, median of {args.repeat})")
    cpu = report.client_cpu_line(rows)
    if cpu:
        print(cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
