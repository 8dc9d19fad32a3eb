"""Progress bars (tqdm) and ``on_result`` on the pool and the patterns."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import pytest

from aurora_swarm import ConfigurationError, Response, VLLMPool
from aurora_swarm.patterns import Stage, map_gather, run_pipeline, scatter_gather, tree_reduce
from aurora_swarm.testing import EndpointBehavior

from .conftest import fleet_of

MODEL = "fake-model"


def bar_to(stream: io.StringIO, **options: object) -> dict[str, object]:
    return {"file": stream, "mininterval": 0, "ascii": True, **options}


def final_lines(stream: io.StringIO) -> list[str]:
    """The last drawn state of each bar (tqdm redraws with carriage returns)."""
    return [part.strip() for part in stream.getvalue().split("\r") if part.strip()]


async def test_send_all_batched_draws_a_bar_and_still_calls_on_result() -> None:
    stream = io.StringIO()
    seen: list[int] = []
    async with fleet_of(3, model=MODEL, max_model_len=64) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8,
                            transport=fleet.transport) as pool:
            prompts = [f"p{i}" for i in range(999)] + ["too long " * 200]
            out = await pool.send_all_batched(
                prompts, on_result=lambda k, r: seen.append(k), progress=bar_to(stream))
    assert sorted(seen) == list(range(1000))
    assert sum(not r.success for r in out) == 1
    last = final_lines(stream)[-1]
    assert last.startswith("send_all_batched: 100%") and "1000/1000" in last
    assert "failed=1" in last and "retries=0" in last and "prompt/s" in last


async def test_no_bar_by_default_and_a_bad_setting_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with fleet_of(2, model=MODEL) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8,
                            transport=fleet.transport) as pool:
            await pool.send_all_batched(["a", "b"])
            with pytest.raises(ConfigurationError, match="progress must be"):
                await pool.send_all_batched(["a"], progress="yes")  # type: ignore[arg-type]
    assert capsys.readouterr().err == ""


async def test_retries_show_on_the_bar() -> None:
    stream = io.StringIO()
    behaviors = {0: EndpointBehavior(script=("503", "503"))}
    async with fleet_of(2, model=MODEL, behaviors=behaviors) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8,
                            transport=fleet.transport) as pool:
            out = await pool.send_all_batched([f"p{i}" for i in range(200)],
                                              progress=bar_to(stream, desc="job"))
    assert all(r.success for r in out)
    last = final_lines(stream)[-1]
    assert last.startswith("job: 100%") and "failed=0" in last
    assert "retries=0" not in last and "retries=" in last


async def test_send_all_unbatched_takes_progress_too() -> None:
    stream = io.StringIO()
    async with fleet_of(2, model=MODEL) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8, use_batch=False,
                            transport=fleet.transport) as pool:
            await pool.send_all_batched([f"p{i}" for i in range(20)], progress=bar_to(stream))
    assert "20/20" in final_lines(stream)[-1]


async def test_map_gather_counts_passed_through_failures_at_their_index() -> None:
    stream = io.StringIO()
    failed = Response(success=False, error="earlier failure")
    seen: dict[int, Response] = {}
    async with fleet_of(2, model=MODEL) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8,
                            transport=fleet.transport) as pool:
            out = await map_gather(pool, ["a", failed, "c"], "do {item}",
                                   on_result=seen.__setitem__, progress=bar_to(stream))
    assert seen == dict(enumerate(out))
    assert seen[1] is failed and seen[2].text == "ECHO: do c"
    assert "3/3" in final_lines(stream)[-1] and "failed=1" in final_lines(stream)[-1]


async def test_tree_reduce_draws_one_bar_per_level() -> None:
    stream = io.StringIO()
    async with fleet_of(2, model=MODEL) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8,
                            transport=fleet.transport) as pool:
            top = await tree_reduce(pool, "rate {item}", "merge {responses}", fanin=4,
                                    items=[f"x{i}" for i in range(40)], progress=bar_to(stream))
    assert top.success
    finals = list({line.split(":")[0]: line for line in final_lines(stream)
                   if "100%" in line}.values())
    assert [line.split(":")[0] for line in finals] == [
        "tree_reduce leaves", "tree_reduce level 1", "tree_reduce level 2",
        "tree_reduce level 3"]
    assert "40/40" in finals[0] and "10/10" in finals[1] and "1/1" in finals[3]


async def test_pipeline_draws_one_bar_per_stage() -> None:
    stream = io.StringIO()
    stages = [Stage("ideas", "idea on {input}", n_agents=3), Stage("pick", "pick {input}")]
    async with fleet_of(2, model=MODEL) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8,
                            transport=fleet.transport) as pool:
            await run_pipeline(pool, stages, "folding", progress=bar_to(stream, desc="plan"))
    finals = list(dict.fromkeys(line.split(":")[0] for line in final_lines(stream)
                                if "100%" in line))
    assert finals == ["plan 0 ideas", "plan 1 pick"]


class _PlainPool:
    """A pool of the user's own making, without ``on_result``."""

    size = 1

    async def send_all_batched(
        self, prompts: Sequence[str], max_tokens: int | None = None
    ) -> list[Response]:
        return [Response(success=True, text=p.upper()) for p in prompts]


async def test_a_pool_without_on_result_works_but_cannot_draw_a_bar() -> None:
    assert [r.text for r in await scatter_gather(_PlainPool(), ["a"])] == ["A"]
    with pytest.raises(ConfigurationError, match="takes on_result="):
        await scatter_gather(_PlainPool(), ["a"], progress=True)


async def test_a_job_bar_starts_at_what_earlier_runs_did(tmp_path: Path) -> None:
    from aurora_swarm.jobs import run_job

    out = tmp_path / "results.jsonl"
    prompts = [f"q{i}" for i in range(300)]
    async with fleet_of(2, model=MODEL) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8,
                            transport=fleet.transport) as pool:
            await run_job(pool, prompts[:100], out)
            stream = io.StringIO()
            summary = await run_job(pool, prompts, out, progress=bar_to(stream))
    assert summary.skipped == 100 and summary.answered == 200
    drawn = final_lines(stream)
    assert drawn[0].startswith("job:  33%") and "100/300" in drawn[0]
    assert "300/300" in drawn[-1] and "failed=0" in drawn[-1]


async def test_the_sync_job_entry_point_says_what_to_use_inside_an_event_loop(
    tmp_path: Path,
) -> None:
    from aurora_swarm.jobs import run_job_sync

    with pytest.raises(ConfigurationError, match=r"use `await run_job\(pool, items, output\)`"):
        run_job_sync(["127.0.0.1:9"], MODEL, ["a"], tmp_path / "r.jsonl")
    assert not (tmp_path / "r.jsonl").exists()
