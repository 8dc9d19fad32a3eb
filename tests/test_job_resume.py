"""Resuming a job whose prompts or settings changed: fingerprints, ``on_change``, old files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aurora_swarm import ConfigurationError, VLLMPool
from aurora_swarm._job_output import ResultsFile
from aurora_swarm._job_resume import Fingerprinter, plan_resume
from aurora_swarm.jobs import (
    ChangedItemsError,
    JobItem,
    JobResult,
    PromptFile,
    read_results,
    run_job,
)
from aurora_swarm.testing import FakeFleet, expected_answer

from .conftest import FAST_RETRY, MODEL, fleet_of


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_prompts(path: Path, prompts: list[str]) -> PromptFile:
    path.write_text("".join(p + "\n" for p in prompts))
    return PromptFile(path)


async def test_one_changed_prompt_of_1000_stops_then_rerun_sends_only_it(
    fleet: FakeFleet, pool: VLLMPool, tmp_path: Path
) -> None:
    prompts = [f"Question {i}" for i in range(1000)]
    source, out = tmp_path / "prompts.txt", tmp_path / "results.jsonl"
    first = await run_job(pool, write_prompts(source, prompts), out)
    assert first.answered == 1000
    assert all(len(r["fp"]) == 16 for r in lines_of(out))
    before = out.read_bytes()

    prompts[417] = "A totally different question 417"
    write_prompts(source, prompts)
    requests = pool.stats().requests
    with pytest.raises(ChangedItemsError) as caught:
        await run_job(pool, PromptFile(source), out)
    error = caught.value
    assert (error.changed, error.examples, error.gone) == (1, [418], 0)  # id = line number
    assert "1 items whose prompt or settings" in str(error) and "--on-change rerun" in str(error)
    assert out.read_bytes() == before and pool.stats().requests == requests  # nothing sent

    fleet.reset_counters()
    again = await run_job(pool, PromptFile(source), out, on_change="rerun")
    assert (again.skipped, again.sent, again.changed, again.on_change) == (999, 1, 1, "rerun")
    assert fleet.total_prompts() == 1  # the servers saw exactly the changed prompt
    assert len(lines_of(out)) == 1001  # appended: the old line stays, the last one wins
    results = read_results(out)
    assert [r.id for r in results] == list(range(1, 1001))
    assert results[417].text == expected_answer(prompts[417], 64)[0]
    assert results[416].text == expected_answer(prompts[416], 64)[0]
    assert [r.id for r in read_results(out, ordered=False)][-1] == 418

    settled = await run_job(pool, PromptFile(source), out)  # the newest line is read on resume
    assert (settled.skipped, settled.sent, settled.changed) == (1000, 0, 0)


async def test_one_setting_changed_for_all(
    fleet: FakeFleet, pool: VLLMPool, tmp_path: Path
) -> None:
    prompts = [f"Question {i}" for i in range(1000)]
    out = tmp_path / "results.jsonl"
    await run_job(pool, prompts, out)
    with pytest.raises(ChangedItemsError) as caught:
        await run_job(pool, prompts, out, max_tokens=7)
    assert caught.value.changed == 1000 and caught.value.examples == [0, 1, 2, 3, 4]
    assert "ids 0, 1, 2, 3, 4, ..." in str(caught.value)
    fleet.reset_counters()
    again = await run_job(pool, prompts, out, max_tokens=7, on_change="rerun")
    assert (again.skipped, again.sent, again.changed) == (0, 1000, 1000)
    assert fleet.total_prompts() == 1000
    assert [r.text for r in read_results(out)] == [expected_answer(p, 7)[0] for p in prompts]


@pytest.mark.parametrize("change", ["model sampling", "system prompt", "per-item max_tokens"])
async def test_what_counts_as_a_change(fleet: FakeFleet, tmp_path: Path, change: str) -> None:
    out = tmp_path / "results.jsonl"
    items: list[dict[str, Any]] = [{"id": f"q{i}", "prompt": f"p {i}"} for i in range(20)]
    async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=16, retry=FAST_RETRY,
                        chat_template="{{ messages[-1]['content'] }}",
                        transport=fleet.transport) as pool:
        await run_job(pool, items, out)
        if change == "per-item max_tokens":
            items[3]["max_tokens"] = 5
            with pytest.raises(ChangedItemsError, match="ids 'q3'"):
                await run_job(pool, items, out)
        elif change == "system prompt":
            with pytest.raises(ChangedItemsError, match="holds results for 20 items"):
                await run_job(pool, items, out, system_prompt="Be brief.")
    if change == "model sampling":
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=16, retry=FAST_RETRY,
                            chat_template="{{ messages[-1]['content'] }}",
                            sampling={"temperature": 0.5}, transport=fleet.transport) as pool:
            with pytest.raises(ChangedItemsError, match="holds results for 20 items"):
                await run_job(pool, items, out)


async def test_keep_keeps_old_answers_and_gone_ids_are_counted(
    pool: VLLMPool, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    await run_job(pool, [f"old {i}" for i in range(30)], out)
    new = [f"new {i}" if i < 3 else f"old {i}" for i in range(20)]  # 3 changed, 10 gone
    kept = await run_job(pool, new, out, on_change="keep")
    assert (kept.skipped, kept.sent, kept.changed, kept.gone) == (20, 0, 3, 10)
    assert read_results(out)[0].text == expected_answer("old 0", 64)[0]
    with pytest.raises(ChangedItemsError, match="10 ids in it are no longer in the prompts"):
        await run_job(pool, new, out)


async def test_results_without_fingerprints_still_resume_unchecked(
    pool: VLLMPool, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    prompts = [f"prompt {i}" for i in range(50)]
    await run_job(pool, prompts[:30], out)
    old = []
    for record in lines_of(out):
        del record["fp"]  # as an older version wrote them
        old.append(json.dumps(record) + "\n")
    out.write_text("".join(old))
    summary = await run_job(pool, prompts, out)
    assert (summary.skipped, summary.sent, summary.unchecked, summary.changed) == (30, 20, 30, 0)
    assert [r.text for r in read_results(out)] == [expected_answer(p, 64)[0] for p in prompts]


async def test_a_rerun_that_retries_failures_keeps_one_line_per_id(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    prompts = [f"short {i}" for i in range(10)]
    async with fleet_of(2, model=MODEL, max_model_len=64) as small:
        async with VLLMPool(small.endpoints, model=MODEL, max_tokens=8,
                            transport=small.transport) as pool:
            await run_job(pool, prompts, out)
            prompts[4] = "long " * 80  # changed, and cannot fit: its new line is a failure
            summary = await run_job(pool, prompts, out, on_change="rerun")
            assert (summary.sent, summary.failed) == (1, 1)
            assert len(lines_of(out)) == 11
            assert not read_results(out)[4].success
    async with fleet_of(2, model=MODEL) as large:
        async with VLLMPool(large.endpoints, model=MODEL, max_tokens=8,
                            transport=large.transport) as pool:
            summary = await run_job(pool, prompts, out)
    # The failed last line of id 4 went, and so did its superseded answer: one line per id.
    assert (summary.sent, summary.retried_failures) == (1, 1)
    assert sorted(r["id"] for r in lines_of(out)) == list(range(10))
    assert read_results(out)[4].text == expected_answer(prompts[4], 8)[0]


async def test_a_bad_on_change_is_refused(pool: VLLMPool, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="on_change must be one of"):
        await run_job(pool, ["a"], tmp_path / "r.jsonl", on_change="ignore")  # type: ignore[arg-type]


# -- the pure parts: the resume plan and the fingerprint -------------------------------------------

RECORDS: dict[str | int, tuple[str | None, bool]] = {
    "same": ("f1", True), "edited": ("f2", True), "legacy": (None, True),
    "kept failure": ("f4", False), "gone": ("f5", True)}
NOW = {"same": "f1", "edited": "F2", "legacy": "f3", "kept failure": "f4", "new": "f6"}


@pytest.mark.parametrize(("on_change", "done"), [
    ("stop", {"same", "legacy", "kept failure"}),
    ("rerun", {"same", "legacy", "kept failure"}),
    ("keep", {"same", "edited", "legacy", "kept failure"}),
])
def test_the_resume_plan(on_change: Any, done: set[str]) -> None:
    plan = plan_resume(RECORDS, NOW, on_change)
    assert plan.done == done
    assert (plan.changed, plan.changed_examples, plan.gone, plan.gone_examples) == (
        1, ["edited"], 1, ["gone"])
    assert (plan.unchecked, plan.kept_failures) == (1, 1)


async def test_fingerprints_tell_apart_what_changes_an_answer(pool: VLLMPool) -> None:
    fingerprint = Fingerprinter(pool, None, pool.chat_template, None)
    item = JobItem("a", "What is 2 + 2?")
    variants = [
        item, attrs.evolve(item, prompt="What is 2 + 3?"), attrs.evolve(item, max_tokens=64),
        attrs.evolve(item, max_tokens=65), attrs.evolve(item, system_prompt="Be brief."),
        attrs.evolve(item, prompt=[{"role": "user", "content": "What is 2 + 2?"}]),
    ]
    prints = [fingerprint(v) for v in variants]
    assert prints[0] == prints[2]  # the pool's max_tokens (64) is what the item gets anyway
    assert len({prints[0], *prints[1:2], *prints[3:]}) == 5
    # What does not change an answer does not change the fingerprint: id, index, meta.
    assert fingerprint(attrs.evolve(item, id="b", index=9, meta={"x": 1})) == prints[0]
    other = Fingerprinter(pool, 7, pool.chat_template, "Be brief.")
    assert other(item) not in prints


@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), max_size=30))
def test_readers_and_resume_take_the_last_line_of_each_id(
    tmp_path_factory: pytest.TempPathFactory, lines: list[tuple[int, bool]]
) -> None:
    out = tmp_path_factory.mktemp("results") / "results.jsonl"
    records = [JobResult(i, i, ok, f"answer {n}", fingerprint=f"{n:016x}")
               for n, (i, ok) in enumerate(lines)]
    out.write_bytes(b"".join(r.line() for r in records))
    last = {r.id: r for r in records}
    assert read_results(out) == sorted(last.values(), key=lambda r: r.index)
    results = ResultsFile.open(out, retry_failed=True)
    try:
        assert results.records == {i: (r.fingerprint, True) for i, r in last.items()
                                   if r.success}
        assert results.dropped_failures == sum(not r.success for r in last.values())
    finally:
        results.close()
    # After a rewrite (there were failures to drop), each id is in the file once.
    kept = read_results(out, ordered=False)
    assert len({r.id for r in kept}) == len(kept) or not results.dropped_failures
