"""What a harness run writes: ``results.csv``, ``manifest.json``, ``table.md``/``table.rst``, PNGs.

Also the splice that puts the table and plots into README.md and ``docs/benchmarks.rst``
(``python -m benchmarks.harness --update-readme RESULTS_DIR``), so that the published figures
always come from a run's files, never typed by hand.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

COLUMNS = [
    "target", "sweep", "mode", "prompts", "endpoints", "chunk_size", "pool", "repeat", "status",
    "note",
    "requests", "batch_requests", "answered", "failed", "wall_s", "prompts_per_s",
    "p50_s", "p95_s", "p99_s", "client_cpu_s", "cpu_us_per_prompt",
    "request_overhead_s", "prompt_time_s", "token_time_s", "max_concurrent_seqs", "slow",
    "fault_rate", "max_tokens", "model", "started_at",
]
METRICS = ["requests", "batch_requests", "answered", "failed", "wall_s", "prompts_per_s",
           "p50_s", "p95_s", "p99_s", "client_cpu_s", "cpu_us_per_prompt"]
# What makes two runs repeats of one condition.
CONDITION = ["target", "mode", "prompts", "endpoints", "chunk_size", "pool",
             "request_overhead_s",
             "prompt_time_s", "token_time_s", "max_concurrent_seqs", "slow", "fault_rate",
             "max_tokens", "model"]
PACKAGES = ["aurora-swarm", "openai", "httpx2", "httpcore2", "httpx", "httpcore", "anyio",
            "attrs", "h11", "tenacity", "matplotlib"]
# Where --update-readme puts a run's table: marker lines in README.md and docs/benchmarks.rst.
MARKERS = {"fake": "benchmark-table", "vllm": "benchmark-vllm-table"}
PLOTS = {
    "requests_vs_prompts.png": "HTTP requests vs prompts",
    "throughput_vs_prompts.png": "Throughput vs prompts",
    "p95_vs_chunk_size.png": "p95 per-prompt latency vs chunk size",
    "throughput_vs_endpoints.png": "Throughput vs endpoints",
}

Row = dict[str, Any]


# -- files -------------------------------------------------------------------------------------


def write_csv(path: Path, rows: Iterable[Row]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in COLUMNS})


def _cell(value: object) -> object:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return "" if value is None else value


def read_csv(path: Path) -> list[Row]:
    rows = []
    with path.open(newline="") as f:
        for raw in csv.DictReader(f):
            row: Row = dict(raw)
            for key in ("prompts", "endpoints", "repeat", "max_concurrent_seqs", "max_tokens",
                        *METRICS):
                row[key] = _number(raw.get(key, ""))
            rows.append(row)
    return rows


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def manifest(config: Mapping[str, Any], *, started: datetime, finished: datetime,
             extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Versions, machine, configuration and date of a run."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "date": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "duration_s": round((finished - started).total_seconds(), 1),
        "command": [Path(sys.executable).name, "-m", "benchmarks.harness", *sys.argv[1:]],
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in load] if load else None,
        "packages": versions,
        "git": _git(),
        "config": dict(config),
        **(extra or {}),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _git() -> dict[str, Any] | None:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, check=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def now() -> datetime:
    return datetime.now(timezone.utc)


# -- medians over repeats ----------------------------------------------------------------------


def medians(rows: Iterable[Row]) -> list[Row]:
    """One row per condition: the median of each metric over its ``ok`` runs.

    A condition with no ``ok`` run keeps its first row (skipped, timed out, failed) so the
    table can say why. ``runs`` is the number of runs the median is over.
    """
    groups: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for row in rows:
        groups[tuple(str(row.get(k)) for k in CONDITION)].append(row)
    out = []
    for group in groups.values():
        ok = [r for r in group if r.get("status") == "ok"]
        if not ok:
            out.append({**group[0], "runs": 0})
            continue
        merged = {**ok[0], "runs": len(ok)}
        for key in METRICS:
            values = [float(r[key]) for r in ok if not _nan(r.get(key))]
            merged[key] = statistics.median(values) if values else math.nan
        out.append(merged)
    return out


def _nan(value: object) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def pick(rows: Iterable[Row], **where: object) -> list[Row]:
    """Rows whose fields equal ``where`` (compared as text, so CSV and live rows agree)."""
    return [r for r in rows if all(_same(r.get(k), v) for k, v in where.items())]


def in_sweep(rows: Iterable[Row], name: str) -> list[Row]:
    """Rows measured for sweep ``name`` (a condition shared by sweeps names them all)."""
    return [r for r in rows if name in str(r.get("sweep", "")).split("+")]


def _same(a: object, b: object) -> bool:
    if isinstance(a, float | int) and isinstance(b, float | int):
        return float(a) == float(b)
    return str(a) == str(b)


# -- the headline comparison -------------------------------------------------------------------


def headline(rows: Sequence[Row], prompts: int, endpoints: int | None = None) -> str | None:
    """``10,000 prompts over 100 endpoints: batch N requests, non-batch M (M/N x fewer); ...``."""
    where: dict[str, object] = {"prompts": prompts, "chunk_size": "auto", "pool": "fresh"}
    if endpoints is not None:
        where["endpoints"] = endpoints
    found = {r["mode"]: r for r in pick(medians(in_sweep(rows, "prompts")), **where)
             if r.get("runs")}
    if "batch" not in found or "non-batch" not in found:
        return None
    b, n = found["batch"], found["non-batch"]
    fewer = n["requests"] / b["requests"] if b["requests"] else math.inf
    faster = n["wall_s"] / b["wall_s"] if b["wall_s"] else math.inf
    ratio = b["prompts_per_s"] / n["prompts_per_s"] if n["prompts_per_s"] else math.inf
    where_text = "servers" if b["target"] == "vllm" else "endpoints"
    if b["runs"] == n["runs"]:
        runs = "one run each" if b["runs"] == 1 else f"median of {int(b['runs'])} runs"
    else:
        runs = f"median of {int(b['runs'])} batch and {int(n['runs'])} non-batch runs"
    text = (
        f"{int(prompts):,} prompts over {int(b['endpoints']):,} {where_text}: "
        f"batch {int(b['requests']):,} requests, non-batch {int(n['requests']):,} requests "
        f"({_fewer(fewer)}); batch {b['wall_s']:.2f} s, non-batch {n['wall_s']:.2f} s "
        f"({_speed(faster)}); throughput batch {b['prompts_per_s']:,.0f} prompts/s, "
        f"non-batch {n['prompts_per_s']:,.0f} prompts/s (ratio {ratio:.2f}); "
        f"{runs}"
    )
    # The same call with one request per endpoint (from the chunk sweep), when measured.
    share = math.ceil(prompts / int(b["endpoints"]))
    static = pick(medians(in_sweep(rows, "chunk")), prompts=prompts, chunk_size=share,
                  endpoints=b["endpoints"], mode="batch")
    if static and static[0].get("runs"):
        c = static[0]
        text += (f". With Chunking(chunk_size={share}): {int(c['requests']):,} requests "
                 f"({n['requests'] / c['requests']:,.0f}x fewer), {c['wall_s']:.2f} s "
                 f"({_speed(n['wall_s'] / c['wall_s'])})")
    return text


# -- tables ------------------------------------------------------------------------------------


def _fmt(value: object, spec: str) -> str:
    if _nan(value):
        return "—"
    return format(float(value), spec)  # type: ignore[arg-type]


def _latency(row: Row | None) -> str:
    if row is None or not row.get("runs"):
        return "—"
    return " / ".join(_fmt(row[k], ".3f") for k in ("p50_s", "p95_s", "p99_s"))


def table_rows(rows: Sequence[Row], endpoints: int | None) -> tuple[list[list[str]], list[str]]:
    """The headline table (batch vs non-batch by prompt count) and its footnotes."""
    med = pick(medians(in_sweep(rows, "prompts")), chunk_size="auto", pool="fresh")
    if endpoints is not None:
        med = pick(med, endpoints=endpoints)
    header = ["Prompts", "Mode", "HTTP requests", "Wall s", "Prompts/s",
              "Latency p50 / p95 / p99 s", "Client CPU µs/prompt"]
    body = [header]
    notes: list[str] = []
    for prompts in sorted({int(r["prompts"]) for r in med}):
        pair = {r["mode"]: r for r in pick(med, prompts=prompts)}
        for mode in ("batch", "non-batch"):
            row = pair.get(mode)
            if row is None:
                continue
            if not row.get("runs"):
                reason = row.get("note") or row.get("status")
                body.append([f"{prompts:,}", mode, str(row.get("status")), "—", "—", "—", "—"])
                notes.append(f"{mode} at {prompts:,} prompts: {reason}")
                continue
            body.append([
                f"{prompts:,}", mode, f"{int(row['requests']):,}", _fmt(row["wall_s"], ".2f"),
                _fmt(row["prompts_per_s"], ",.0f"), _latency(row),
                _fmt(row["cpu_us_per_prompt"], ",.0f"),
            ])
        if "batch" in pair and "non-batch" in pair and pair["batch"].get("runs") \
                and pair["non-batch"].get("runs"):
            b, n = pair["batch"], pair["non-batch"]
            notes.append(
                f"{prompts:,} prompts: {_fewer(n['requests'] / b['requests'])} requests, "
                f"{_speed(n['wall_s'] / b['wall_s'])} in batch mode")
    return body, notes


def _fewer(ratio: float) -> str:
    """``ratio`` = non-batch requests / batch requests, in words."""
    if ratio < 1.05:
        return "as many"
    return f"{ratio:,.1f}x fewer" if ratio < 10 else f"{ratio:,.0f}x fewer"


def _speed(ratio: float) -> str:
    """``ratio`` = non-batch time / batch time, in words."""
    return f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"


def markdown_table(body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(body[0]) + " |",
             "|" + "|".join("---:" if i not in (1,) else "---" for i in range(len(body[0]))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body[1:]]
    return "\n".join(lines)


def rst_table(body: Sequence[Sequence[str]]) -> str:
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in body:
        for k, cell in enumerate(row):
            lines.append(("   * - " if k == 0 else "     - ") + (cell or ".."))
    return "\n".join(lines).replace("- ..", "-")


def describe_conditions(config: Mapping[str, Any]) -> str:
    """One sentence saying what the table's numbers were measured on."""
    if config.get("target") == "vllm":
        return (f"Real vLLM: {config.get('servers')} servers (hostfile in `manifest.json`), "
                f"model {config.get('model')}, max_tokens {config.get('max_tokens')}, "
                f"{_runs(config)}.")
    lat = config.get("latency", {})
    slow = config.get("slow") or {}
    stragglers = (", stragglers " + ", ".join(f"endpoint {k} {v}x slower" for k, v in
                                              slow.items())) if slow else ""
    faults = f", fault rate {config['fault_rate']}" if config.get("fault_rate") else ""
    return (
        f"Fake fleet (`python -m aurora_swarm.testing`, its own process) of "
        f"{config.get('headline_endpoints')} endpoints, each modelled on a GPU vLLM server: "
        f"{lat.get('request_overhead', 0) * 1000:g} ms per request + "
        f"{lat.get('prompt_time', 0) * 1000:g} ms per prompt on "
        f"{lat.get('max_concurrent_seqs')} concurrent sequence slots{stragglers}{faults}; "
        f"max_tokens {config.get('max_tokens')}; {_runs(config)}."
    )


def _runs(config: Mapping[str, Any]) -> str:
    repeat = int(config.get("repeat") or 1)
    if repeat == 1:
        return "one run each, a fresh pool per run"
    return (f"median of {repeat} runs, a fresh pool per run (one run when it takes over "
            f"{config.get('slow_run_s'):g} s)")


def client_cpu_line(rows: Sequence[Row]) -> str | None:
    """Client CPU per prompt, batch beside non-batch, fresh and warm pool (issue 4's figure)."""
    med = {(r["mode"], r["pool"]): r for r in medians(in_sweep(rows, "client_cpu"))
           if r.get("runs")}
    if ("batch", "fresh") not in med:
        return None
    parts = []
    for mode in ("batch", "non-batch"):
        fresh, warm = med.get((mode, "fresh")), med.get((mode, "warm"))
        if fresh is None:
            continue
        figure = f"{fresh['cpu_us_per_prompt']:,.1f}"
        if warm is not None:
            figure += f" (warm pool {warm['cpu_us_per_prompt']:,.1f})"
        parts.append(f"{mode} {figure} µs/prompt at {int(fresh['prompts']):,} prompts")
    endpoints = int(med["batch", "fresh"]["endpoints"])
    return (f"Client CPU over {endpoints} near-instant endpoints: " + "; ".join(parts) +
            " (target: batch ≤ 25 µs/prompt at 20,000 prompts).")


def write_tables(out: Path, rows: Sequence[Row], config: Mapping[str, Any]) -> str:
    """Write ``table.md`` and ``table.rst``; return the Markdown."""
    endpoints = config.get("headline_endpoints")
    body, notes = table_rows(rows, int(endpoints) if endpoints else None)
    head = config.get("headline_prompts")
    notes = [n for n in notes if not (head and n.startswith(f"{int(head):,} prompts:"))]
    lines_md = [markdown_table(body), ""]
    lines_rst = [rst_table(body), ""]
    extra = [headline(rows, int(config["headline_prompts"]), endpoints)
             if config.get("headline_prompts") else None, client_cpu_line(rows)]
    bullets = [*notes, *[e for e in extra if e]]
    conditions = describe_conditions(config)
    date = str(config.get("date", ""))[:10]
    tail = ["", f"{conditions} Run of {date}; details in `manifest.json`.", ""]
    lines_md += [f"- {b}" for b in bullets] + tail
    lines_rst += [f"- {b}" for b in bullets] + tail
    markdown = "\n".join(lines_md)
    (out / "table.md").write_text(markdown)
    (out / "table.rst").write_text(_md_code_to_rst("\n".join(lines_rst)))
    return markdown


def _md_code_to_rst(text: str) -> str:
    return re.sub(r"(?<!`)`([^`]+)`(?!`)", r"``\1``", text)


# -- plots -------------------------------------------------------------------------------------


def plot(out: Path, rows: Sequence[Row], config: Mapping[str, Any]) -> list[str]:
    """Write the PNGs that have data; return their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med = medians(rows)
    endpoints = config.get("headline_endpoints")
    by_prompts = pick(in_sweep(med, "prompts"), chunk_size="auto", pool="fresh",
                      **({"endpoints": endpoints} if endpoints else {}))
    subtitle = _subtitle(config)
    written = []
    colors = {"batch": "tab:blue", "non-batch": "tab:orange"}

    def series(data: Sequence[Row], x: str, y: str, mode: str) -> tuple[list[float], list[float]]:
        pts = sorted((float(r[x]), float(r[y])) for r in pick(data, mode=mode)
                     if r.get("runs") and not _nan(r.get(y)))
        return [p[0] for p in pts], [p[1] for p in pts]

    def plain(ax: Any, *axes: str) -> None:
        """Log axes labelled 100, 1,000, ... instead of powers of ten."""
        from matplotlib.ticker import FuncFormatter, NullFormatter

        for which in axes:
            axis = ax.xaxis if which == "x" else ax.yaxis
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.10g}"))
            axis.set_minor_formatter(NullFormatter())

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)

    for name, metric, ylabel, title in (
        ("requests_vs_prompts.png", "requests", "HTTP requests", "HTTP requests sent"),
        ("throughput_vs_prompts.png", "prompts_per_s", "prompts / s", "Throughput"),
    ):
        if not by_prompts:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for mode in ("batch", "non-batch"):
            xs, ys = series(by_prompts, "prompts", metric, mode)
            if xs:
                ax.plot(xs, ys, "o-", label=mode, color=colors[mode])
                below = mode == "batch"  # labels apart where the two lines meet
                for xv, yv in zip(xs, ys, strict=True):
                    ax.annotate(f"{yv:,.0f}", (xv, yv), textcoords="offset points",
                                xytext=(0, -13 if below else 7), ha="center", fontsize=8)
        skipped = [int(r["prompts"]) for r in pick(by_prompts, mode="non-batch")
                   if not r.get("runs")]
        if skipped:
            ax.plot([], [], " ", label="non-batch not run at " +
                    ", ".join(f"{s:,}" for s in skipped))
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain(ax, "x", "y")
        ax.set_xlabel("prompts in the call")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}\n{subtitle}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.margins(y=0.15)
        ax.legend()
        save(fig, name)

    chunks = pick(in_sweep(med, "chunk"), mode="batch")
    fixed = [r for r in chunks if str(r["chunk_size"]).isdigit() and r.get("runs")]
    if fixed:
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        pts = sorted((int(r["chunk_size"]), r) for r in fixed)
        xs = [p[0] for p in pts]
        ax.plot(xs, [p[1]["p95_s"] for p in pts], "o-", color="tab:blue", label="p95, fixed chunk")
        ax.plot(xs, [p[1]["p50_s"] for p in pts], "s--", color="tab:cyan", alpha=0.8,
                label="p50, fixed chunk")
        for xv, r in pts:
            ax.annotate(f"{int(r['requests']):,} req", (xv, r["p95_s"]),
                        textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
        auto = [r for r in chunks if r["chunk_size"] == "auto" and r.get("runs")]
        if auto:
            a = auto[0]
            ax.axhline(a["p95_s"], color="tab:green", linestyle=":",
                       label=f"p95, adaptive chunking ({int(a['requests']):,} req)")
        first = fixed[0]
        ax.set_xscale("log")
        ax.margins(x=0.08)
        plain(ax, "x")
        ax.set_xlabel("chunk size (prompts per request)")
        ax.set_ylabel("per-prompt latency, s")
        ax.set_title(f"Per-prompt latency vs chunk size: {int(first['prompts']):,} prompts, "
                     f"{int(first['endpoints'])} endpoints\n{subtitle}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.margins(y=0.15)
        ax.legend(fontsize=8)
        save(fig, "p95_vs_chunk_size.png")

    by_endpoints = pick(in_sweep(med, "endpoints"), chunk_size="auto", pool="fresh")
    if by_endpoints:
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        n = int(by_endpoints[0]["prompts"])
        for mode in ("batch", "non-batch"):
            xs, ys = series(pick(by_endpoints, prompts=n), "endpoints", "prompts_per_s", mode)
            if xs:
                ax.plot(xs, ys, "o-", label=mode, color=colors[mode])
            missing = [f"{int(r['endpoints']):,} ({r['status']})"
                       for r in pick(by_endpoints, prompts=n, mode=mode) if not r.get("runs")]
            if missing:
                ax.plot([], [], " ", label=f"{mode} not measured at " + ", ".join(missing))
        lat = config.get("latency", {})
        slots, per_prompt = lat.get("max_concurrent_seqs") or 0, lat.get("prompt_time") or 0
        sizes = sorted({float(r["endpoints"]) for r in by_endpoints})
        if slots and per_prompt and sizes:
            # The best a batched call can do: full waves of sequence slots, one request each.
            overhead = lat.get("request_overhead") or 0.0
            ideal = [n / (overhead + math.ceil(n / (m * slots)) * per_prompt) for m in sizes]
            ax.plot(sizes, ideal, ":", color="gray", label="ideal (the latency model alone)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain(ax, "x", "y")
        ax.set_xlabel("endpoints")
        ax.set_ylabel("prompts / s")
        ax.set_title(f"Throughput vs endpoints: {n:,} prompts\n{subtitle}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        save(fig, "throughput_vs_endpoints.png")
    return written


def _subtitle(config: Mapping[str, Any]) -> str:
    if config.get("target") == "vllm":
        return f"real vLLM ({config.get('model')}), max_tokens {config.get('max_tokens')}"
    lat = config.get("latency", {})
    return (f"fake fleet: {lat.get('request_overhead', 0) * 1000:g} ms/request + "
            f"{lat.get('prompt_time', 0) * 1000:g} ms/prompt, "
            f"{lat.get('max_concurrent_seqs')} slots per endpoint")


# -- README and docs ---------------------------------------------------------------------------


def splice(text: str, start: str, end: str, block: str, where: str, gap: str = "\n") -> str:
    """Replace what lies between the ``start`` and ``end`` marker lines with ``block``."""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{where}: markers {start!r} ... {end!r} not found")
    return pattern.sub(lambda _: f"{start}{gap}{block.strip()}\n{gap}{end}", text, count=1)


def update_readme(results: Path, readme: Path, docs_page: Path) -> None:
    """Splice ``results``' table (and plot links) into README.md and the docs page.

    A fake-fleet run goes between the ``benchmark-table`` markers, with its plots; a real-vLLM
    run between the ``benchmark-vllm-table`` markers, table only.
    """
    results = results.resolve()
    config = json.loads((results / "manifest.json").read_text())["config"]
    target = config.get("target", "fake")
    marker = MARKERS[target]
    table_md = (results / "table.md").read_text()
    table_rst = (results / "table.rst").read_text()
    pngs = [name for name in PLOTS if (results / name).exists()] if target == "fake" else []
    rel_readme = Path(os.path.relpath(results, readme.resolve().parent)).as_posix()
    rel_docs = Path(os.path.relpath(results, docs_page.resolve().parent)).as_posix()
    images_md = " ".join(f'<img src="{rel_readme}/{name}" width="48%" alt="{PLOTS[name]}">'
                         for name in pngs)
    run = ("python -m benchmarks.harness" if target == "fake" else
           "python -m benchmarks.harness --target vllm --hostfile H --model M")
    regenerate = (f"Regenerate: `{run} --out {rel_readme}`, then "
                  f"`python -m benchmarks.harness --update-readme {rel_readme}`.")
    block_md = "\n\n".join(x for x in (table_md.rstrip(), images_md, regenerate) if x)
    images_rst = "\n\n".join(
        f".. image:: {rel_docs}/{name}\n   :alt: {PLOTS[name]}\n   :width: 80%" for name in pngs)
    block_rst = "\n\n".join(x for x in (table_rst.rstrip(), images_rst,
                                          _md_code_to_rst(regenerate)) if x)
    readme.write_text(splice(readme.read_text(), f"<!-- {marker}:start -->",
                             f"<!-- {marker}:end -->", block_md, str(readme)))
    docs_page.write_text(splice(docs_page.read_text(), f".. {marker}:start", f".. {marker}:end",
                                block_rst, str(docs_page), gap="\n\n"))
