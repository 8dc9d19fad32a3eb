"""A resumable batch job: prompts file in, results file out, progress, and a resume.

``run_job`` sends every item the results file does not hold yet and appends one JSON line per
settled item, so the results file is the checkpoint. Here the first run is cut short after half
a second (as a job's wall time or a crash would cut it); the second run sends only what is
missing. ``read_results`` reads the records back in input order.

Run it with ``python examples/batch_job.py [DIRECTORY]`` (default: a temporary directory).
"""

import json
import sys
import tempfile
from pathlib import Path

import anyio

from aurora_swarm import VLLMPool
from aurora_swarm.jobs import JobProgress, PromptFile, read_results, run_job
from aurora_swarm.testing import FakeFleet, LatencyModel


def show(p: JobProgress) -> None:
    rate = f"{p.rate:.0f}/s" if p.rate else "-"
    print(f"  progress: {p.skipped + p.done}/{p.total} done, {p.failed} failed, {rate}, "
          f"{p.stats.requests} requests")


async def main(directory: Path) -> None:
    prompts = directory / "prompts.jsonl"
    with prompts.open("w") as out:
        for i in range(3000):
            out.write(json.dumps({"id": f"q{i}", "prompt": f"Classify abstract {i}."}) + "\n")
    results = directory / "results.jsonl"
    results.unlink(missing_ok=True)

    latency = LatencyModel(request_overhead=0.01, prompt_time=0.02, max_concurrent_seqs=16)
    async with FakeFleet(4, latency=latency) as fleet:
        async with VLLMPool(fleet.endpoints, model=fleet.model, max_tokens=32) as pool:
            print("first run, stopped after 0.5 s:")
            with anyio.move_on_after(0.5):
                await run_job(pool, PromptFile(prompts), results, window=500,
                              progress=show, progress_interval=0.2)
            # On a busy machine the first run may end before it has written anything.
            held = len(read_results(results)) if results.exists() else 0
            print(f"  the results file holds {held} lines")

            print("second run:")
            summary = await run_job(pool, PromptFile(prompts), results, window=500,
                                    progress=show, progress_interval=0.5)
            print(f"  skipped {summary.skipped}, answered {summary.answered}, "
                  f"failed {summary.failed}, complete: {summary.complete}")

    records = read_results(results)  # sorted by input index
    print(f"{len(records)} records, ids unique: {len({r.id for r in records}) == len(records)}")
    print(records[0].id, records[0].text, records[0].endpoint is not None)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        anyio.run(main, Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            anyio.run(main, Path(tmp))
