"""Does prefix affinity make vLLM's prefix cache pay?

P distinct long prefixes (a rubric each), K prompts per prefix, shuffled, sent batched over real
vLLM servers twice: with plain assignment and with ``prefix_affinity``. The prefix-cache hit rate
is read from the servers' own counters (``vllm:prefix_cache_hits_total`` /
``vllm:prefix_cache_queries_total`` on ``/metrics``), summed over servers, per mode. Each mode
uses its own prefixes, so neither finds the other's in the cache.

With P prefixes on M servers and N prompts, expect about (N - P) / N with affinity (each prefix
computed once) against (N - P*M) / N without (once per server), times the share of prompt tokens
that fill whole cache blocks. The prompts sent to each server are reported beside the hit rate: a
"plain" hit rate above the expected one may only mean that one server got most of the prompts.

Run: ``python -m benchmarks.prefix_affinity --hostfile H --model M``
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import time
from pathlib import Path

import anyio
import httpx2

from aurora_swarm import Endpoint, VLLMPool, parse_hostfile

UNIT = "Score the answer on clarity and rigor. "
_METRIC = re.compile(r"^(vllm:prefix_cache_(?:hits|queries)_total)\{[^}]*\}\s+([0-9.eE+-]+)$")


def prefix_counters(endpoints: list[Endpoint]) -> tuple[float, float]:
    """Summed (hits, queries) of the servers' prefix caches, in tokens."""
    hits = queries = 0.0
    for endpoint in endpoints:
        text = httpx2.get(endpoint.url + "/metrics", timeout=30).text
        for line in text.splitlines():
            match = _METRIC.match(line)
            if match is None:
                continue
            if match.group(1).endswith("hits_total"):
                hits += float(match.group(2))
            else:
                queries += float(match.group(2))
    return hits, queries


def count_tokens(endpoint: Endpoint, model: str, text: str) -> int:
    reply = httpx2.post(endpoint.url + "/tokenize", json={"model": model, "prompt": text},
                        timeout=30)
    reply.raise_for_status()
    return int(reply.json()["count"])


def make_prompts(tag: str, prefixes: int, per_prefix: int, filler_units: int,
                 seed: int) -> list[str]:
    rng = random.Random(seed)
    prompts = []
    for p in range(prefixes):
        # Distinct from the first token on, so no two prefixes share a cache block.
        rubric = f"Rubric {tag}-{p:04d}. " + UNIT * filler_units
        for k in range(per_prefix):
            prompts.append(f"{rubric}Answer {k}: yes.")
    rng.shuffle(prompts)
    return prompts


async def run_mode(endpoints: list[Endpoint], model: str, prompts: list[str],
                   affinity: bool) -> dict[str, float | str]:
    before = await anyio.to_thread.run_sync(prefix_counters, endpoints)
    async with VLLMPool(endpoints, model=model, max_tokens=1, timeout=600.0,
                        prefix_affinity=affinity, sampling={"temperature": 0.0}) as pool:
        start = time.perf_counter()
        out = await pool.send_all_batched(prompts)
        elapsed = time.perf_counter() - start
        stats = pool.stats()
    per_server = [e.prompts for e in stats.endpoints]
    answered = [e.answered for e in stats.endpoints]
    after = await anyio.to_thread.run_sync(prefix_counters, endpoints)
    failed = sum(1 for r in out if not r.success)
    hits, queries = after[0] - before[0], after[1] - before[1]
    return {"hit_rate": hits / queries if queries else 0.0, "hits": hits, "queries": queries,
            "seconds": elapsed, "requests": stats.requests, "failed": failed,
            "prompts_per_server": " ".join(str(p) for p in per_server),
            "answered_per_server": " ".join(str(a) for a in answered),
            "taken_back": sum(e.taken_back for e in stats.endpoints),
            "backups": sum(e.backups for e in stats.endpoints),
            "prompts_min": min(per_server), "prompts_max": max(per_server)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hostfile", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--prefixes", type=int, default=200)
    parser.add_argument("--per-prefix", type=int, default=10)
    parser.add_argument("--prefix-tokens", type=int, default=500)
    parser.add_argument("--out", default="benchmarks/results/prefix_affinity")
    args = parser.parse_args()
    endpoints = parse_hostfile(args.hostfile)
    per_unit = (count_tokens(endpoints[0], args.model, UNIT * 21)
                - count_tokens(endpoints[0], args.model, UNIT)) / 20
    units = max(1, round(args.prefix_tokens / per_unit))
    sample = make_prompts("x", 1, 1, units, 0)[0]
    n = args.prefixes * args.per_prefix
    m = len(endpoints)
    print(f"{n} prompts: {args.prefixes} prefixes x {args.per_prefix} prompts, shuffled; "
          f"{m} servers; a prompt is {count_tokens(endpoints[0], args.model, sample)} tokens")
    rows = []
    for mode, affinity in (("plain", False), ("affinity", True)):
        prompts = make_prompts(mode, args.prefixes, args.per_prefix, units, seed=1)
        result = anyio.run(run_mode, endpoints, args.model, prompts, affinity)
        rows.append({"mode": mode, **result})
        print(f"{mode:>9}: hit rate {result['hit_rate']:.3f} ({result['hits']:.0f} of "
              f"{result['queries']:.0f} prompt tokens from cache), {result['requests']} "
              f"requests, {result['seconds']:.1f} s, {result['failed']} failed; prompts sent "
              f"to each server {result['prompts_per_server']}, answered by each "
              f"{result['answered_per_server']} (even share {n / m:.0f}); "
              f"{result['taken_back']} requests taken back, {result['backups']} backups")
    expected_affinity = (n - args.prefixes) / n
    expected_plain = (n - args.prefixes * m) / n
    print(f"expected about {expected_affinity:.3f} with affinity and {expected_plain:.3f} "
          "without, times the share of prompt tokens in whole cache blocks")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "manifest.json").write_text(json.dumps({
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "servers": m, "prompts": n, "prefixes": args.prefixes,
        "per_prefix": args.per_prefix, "prefix_tokens_target": args.prefix_tokens,
        "expected_affinity": expected_affinity, "expected_plain": expected_plain,
    }, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
