"""pandas and Hugging Face datasets: a DataFrame column through ``map_gather`` and back into the
DataFrame, and a ``Dataset`` as a resumable job whose results come back as a ``Dataset``.

Needs the optional extras: ``pip install -e ".[tables,datasets]"``.

Run it with ``python examples/tables.py``.
"""

import tempfile
from pathlib import Path

import anyio
import datasets
import pandas as pd

from aurora_swarm import VLLMPool
from aurora_swarm.jobs import run_job
from aurora_swarm.patterns import map_gather
from aurora_swarm.tables import to_dataframe, to_dataset
from aurora_swarm.testing import FakeFleet


async def dataframe_column(pool: VLLMPool) -> pd.DataFrame:
    papers = pd.DataFrame(
        {"abstract": [f"abstract of paper {i}" for i in range(10_000)]},
        index=pd.Index([f"doi-{i:05d}" for i in range(10_000)], name="doi"),
    )
    answers = await map_gather(pool, papers["abstract"], "Summarize: {item}")
    return papers.join(to_dataframe(answers, index=papers))


async def dataset_job(pool: VLLMPool, folder: Path) -> datasets.Dataset:
    questions = datasets.Dataset.from_dict({
        "id": [f"q{i}" for i in range(500)],
        "prompt": [f"Question {i}: what is {i} squared?" for i in range(500)],
    })
    await run_job(pool, questions, folder / "results.jsonl")
    return to_dataset(folder / "results.jsonl")  # in input order, one row per id


async def main(folder: Path) -> None:
    async with FakeFleet(4) as fleet:
        async with VLLMPool(fleet.endpoints, model=fleet.model, max_tokens=32) as pool:
            frame = await dataframe_column(pool)
            results = await dataset_job(pool, folder)
            requests = pool.stats().requests
    print(frame[["abstract", "text", "success", "finish_reason"]].head(3).to_string())
    print(f"{len(frame)} rows, all answered: {bool(frame['success'].all())}")
    print(f"Dataset job: {results.num_rows} rows, columns {results.column_names[:4]}")
    print(f"first: {results[0]['id']} -> {results[0]['text']!r}")
    print(f"{requests} HTTP requests for 10,500 prompts")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(main, Path(tmp))
