"""pandas and Hugging Face datasets in and out: map_gather, run_job, to_dataframe, to_dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from aurora_swarm import ConfigurationError, VLLMPool
from aurora_swarm.jobs import JobFileError, read_results, run_job
from aurora_swarm.patterns import map_gather
from aurora_swarm.tables import to_dataframe, to_dataset

from .conftest import fleet_of

pd = pytest.importorskip("pandas")
datasets = pytest.importorskip("datasets")

MODEL = "fake-model"
ROWS = 10_000


async def test_a_10000_row_dataframe_column_goes_through_map_gather_and_back() -> None:
    df = pd.DataFrame(
        {"abstract": [f"abstract {i}" for i in range(ROWS)], "year": range(ROWS)},
        index=pd.Index([f"doc{i}" for i in range(ROWS)], name="doc"),
    ).sample(frac=1.0, random_state=3)  # an index out of order, as after a filter or a sort
    async with fleet_of(4, model=MODEL) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8,
                            transport=fleet.transport) as pool:
            out = await map_gather(pool, df["abstract"], "Summarize {item}")
            requests = pool.stats().requests
    frame = to_dataframe(out, index=df)
    assert frame.index.equals(df.index) and frame.index.name == "doc"
    assert list(frame.columns) == ["text", "success", "finish_reason", "prompt_tokens",
                                   "completion_tokens", "endpoint", "error", "cause",
                                   "latency", "attempts"]
    joined = df.join(frame)
    assert (joined["text"] == "ECHO: Summarize " + joined["abstract"]).all()
    assert joined["success"].all() and joined["error"].isna().all()
    assert (joined["finish_reason"] == "stop").all()
    assert set(joined["endpoint"]) == {str(e) for e in fleet.endpoints}
    assert requests < ROWS / 50  # batched: far fewer requests than rows


async def test_a_whole_table_is_refused_with_the_column_to_pass() -> None:
    df = pd.DataFrame({"abstract": ["a"]})
    ds = datasets.Dataset.from_dict({"abstract": ["a"]})
    async with fleet_of(1, model=MODEL) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8,
                            transport=fleet.transport) as pool:
            with pytest.raises(ConfigurationError, match=r"df\['abstract'\]"):
                await map_gather(pool, df, "Summarize {item}")
            with pytest.raises(ConfigurationError, match=r"ds\['abstract'\]"):
                await map_gather(pool, ds, "Summarize {item}")
            out = await map_gather(pool, ds["abstract"], "Summarize {item}")
    assert [r.text for r in out] == ["ECHO: Summarize a"]


async def test_a_dataset_goes_through_the_job_api_and_back(tmp_path: Path) -> None:
    ds = datasets.Dataset.from_dict({
        "id": [f"q{i}" for i in range(ROWS)],
        "prompt": [f"question {i}" for i in range(ROWS)],
    })
    output = tmp_path / "results.jsonl"
    async with fleet_of(4, model=MODEL) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8,
                            transport=fleet.transport) as pool:
            summary = await run_job(pool, ds, output)
    assert summary.answered == ROWS and summary.complete
    back = to_dataset(output)
    assert back.column_names[:3] == ["id", "text", "success"]
    assert back["id"] == ds["id"]  # every id once, in input order
    assert all(text == f"ECHO: question {i}" for i, text in enumerate(back["text"]))
    frame = to_dataframe(output)
    assert frame.index.name == "id" and frame.index.is_unique and len(frame) == ROWS


async def test_a_series_and_a_dataset_column_as_job_items(tmp_path: Path) -> None:
    series = pd.Series(["alpha", "beta", "gamma"], index=[30, 10, 20])
    column = datasets.Dataset.from_dict({"prompt": ["x", "y"]})["prompt"]
    async with fleet_of(2, model=MODEL) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8,
                            transport=fleet.transport) as pool:
            await run_job(pool, series, tmp_path / "series.jsonl")
            await run_job(pool, column, tmp_path / "column.jsonl")
            frame_input = pd.DataFrame({"prompt": ["p", "q"], "note": ["n", "m"]})
            with pytest.raises(JobFileError, match="note"):
                await run_job(pool, frame_input, tmp_path / "bad.jsonl")
            good = await run_job(pool, frame_input[["prompt"]], tmp_path / "frame.jsonl")
    by_id = {r.id: r.text for r in read_results(tmp_path / "series.jsonl")}
    assert by_id == {30: "ECHO: alpha", 10: "ECHO: beta", 20: "ECHO: gamma"}
    assert [r.text for r in read_results(tmp_path / "column.jsonl")] == ["ECHO: x", "ECHO: y"]
    assert good.answered == 2
    frame = to_dataframe(tmp_path / "series.jsonl", index=series)
    assert list(frame.index) == [30, 10, 20] and list(frame["text"]) == [
        "ECHO: alpha", "ECHO: beta", "ECHO: gamma"]


async def test_failures_keep_their_error_and_cause() -> None:
    async with fleet_of(1, model=MODEL, max_model_len=64) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8,
                            transport=fleet.transport) as pool:
            out = await pool.send_all_batched(["fine", "long " * 500])
    frame = to_dataframe(out)
    assert list(frame["success"]) == [True, False]
    assert frame.loc[1, "cause"] == "PromptError" and "context" in frame.loc[1, "error"]
    assert frame.index.name == "index"
    with pytest.raises(ConfigurationError, match="3 labels for 2 results"):
        to_dataframe(out, index=[1, 2, 3])
