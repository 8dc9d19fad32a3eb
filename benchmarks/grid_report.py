"""The dispatch grid's report: markdown table, heat map of wall / oracle, the issue's checks."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

Checks = Callable[[list[dict[str, Any]], dict[str, Any] | None], list[str]]
_TEXT = {"shape", "pool", "batched_runs", "equal_runs", "oracle_runs"}


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``results.csv``, numbers as numbers."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [{k: v if k in _TEXT else _number(v) for k, v in r.items()}
                for r in csv.DictReader(handle)]


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text else value


def table(rows: list[dict[str, Any]]) -> list[str]:
    """One markdown row per cell."""
    lines = [
        "| slots | fleet | prompts/endpoint | pool | callers | ms a prompt | send_all_batched s "
        "| equal s | oracle s | x equal | x oracle | requests/endpoint max | "
        "prompts/endpoint min-max |",
        "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['slots']} | {r['shape']} | {r['per_endpoint']:,} | {r['pool']} | "
            f"{r['callers']} | {r['prompt_time_s'] * 1000:g} | {r['batched_s']:.3f} | "
            f"{r['equal_s']:.3f} | {r['oracle_s']:.3f} | {r['x_equal']:.2f} | "
            f"{r['x_oracle']:.2f} | {r['requests_max']:g} | "
            f"{r['prompts_min']:g}-{r['prompts_max']:g} |")
    return lines


def heat_map(rows: list[dict[str, Any]], path: Path) -> bool:
    """Draw wall / oracle per cell, one panel per pool and caller count; False without rows."""
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    panels = sorted({(r["pool"], r["callers"]) for r in rows})
    fleets = list(dict.fromkeys((r["slots"], r["shape"]) for r in rows))  # in the grid's order
    sizes = sorted({r["per_endpoint"] for r in rows})
    top = max(2.0, max(r["x_oracle"] for r in rows))
    norm = TwoSlopeNorm(vmin=min(0.5, min(r["x_oracle"] for r in rows)), vcenter=1.0, vmax=top)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1.5,
                                                      0.5 * len(fleets) + 2.2), squeeze=False)
    image = None
    for ax, (pool, callers) in zip(axes[0], panels, strict=True):
        grid = [[math.nan] * len(sizes) for _ in fleets]
        for r in rows:
            if (r["pool"], r["callers"]) == (pool, callers):
                grid[fleets.index((r["slots"], r["shape"]))][sizes.index(r["per_endpoint"])] = (
                    r["x_oracle"])
        image = ax.imshow(grid, cmap="RdYlGn_r", norm=norm, aspect="auto")
        for y, line in enumerate(grid):
            for x, value in enumerate(line):
                if not math.isnan(value):
                    ax.text(x, y, f"{value:.2f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(sizes)), [f"{s:,}" for s in sizes])
        ax.set_yticks(range(len(fleets)), [f"{s} slots, {shape}" for s, shape in fleets])
        ax.set_xlabel("prompts an endpoint")
        ax.set_title(f"{pool} pool, {callers} caller{'s' if callers > 1 else ''}", fontsize=10)
        if ax is not axes[0][0]:
            ax.set_yticklabels([])
    fig.colorbar(image, ax=axes[0].tolist(), label="send_all_batched wall / oracle split wall")
    fig.suptitle("Dispatch grid: send_all_batched against the oracle split (lower is better)",
                 fontsize=11)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def write_report(out: Path, rows: list[dict[str, Any]] | None, checks: Checks, *,
                 strict: bool = False) -> int:
    """Write ``table.md``, ``x_oracle.png`` and ``checks.txt`` into ``out``; print them.

    ``rows`` left out are read from ``out/results.csv`` (and the small-call check from
    ``out/manifest.json``). Returns the exit status: 1 when ``strict`` and a check failed.
    """
    manifest_path = out / "manifest.json"
    small = None
    conditions = ""
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        small = manifest.get("small_calls")
        overhead_ms = manifest["request_overhead_s"] * 1000
        conditions = (f"{manifest['endpoints']} fake endpoints, {overhead_ms:g} ms a request, "
                      f"max_tokens {manifest['max_tokens']}; median of "
                      f"{manifest['repeat']} runs, methods interleaved; {manifest['cpu_count']} "
                      f"cores; {manifest['date']}")
    if rows is None:
        csv_path = out / "results.csv"
        rows = read_rows(csv_path) if csv_path.exists() else []
    lines = table(rows)
    result = checks(rows, small)
    text = ([conditions, ""] if conditions else []) + lines + ["", *result]
    (out / "table.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "checks.txt").write_text("\n".join(result) + "\n", encoding="utf-8")
    drew = heat_map(rows, out / "x_oracle.png")
    print("\n".join(text))
    print(f"wrote {out / 'table.md'}, {out / 'checks.txt'}"
          + (f", {out / 'x_oracle.png'}" if drew else ""))
    return 1 if strict and any(": FAIL (" in line for line in result) else 0
