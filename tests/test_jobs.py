"""Batch jobs from Python: streaming results, checkpointed runs, prompt and results files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from aurora_swarm import (
    ConfigurationError,
    EndpointUnavailable,
    PromptError,
    RetryPolicy,
    VLLMPool,
)
from aurora_swarm.jobs import (
    JobFileError,
    JobItem,
    JobProgress,
    JobResult,
    PromptFile,
    read_results,
    run_job,
    stream_batched,
)
from aurora_swarm.testing import (
    EndpointBehavior,
    FakeClock,
    FakeFleet,
    LatencyModel,
    expected_answer,
    expected_chat_answer,
)

from .conftest import BOTH_BACKENDS, MODEL, fleet_of, until

anyio_backend = BOTH_BACKENDS

PROMPTS = [f"prompt {i} " + "word " * (i % 7) for i in range(300)]


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_answers(path: Path, prompts: list[str], max_tokens: int = 64) -> None:
    """Every prompt has exactly one line, with its own answer."""
    records = lines_of(path)
    ids = [r["id"] for r in records]
    assert sorted(ids) == list(range(len(prompts))), "an id is missing or written twice"
    for record in records:
        text, reason = expected_answer(prompts[record["id"]], max_tokens)
        assert record["success"] and record["text"] == text and record["finish_reason"] == reason
        assert record["index"] == record["id"]


def write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


# -- streaming ------------------------------------------------------------------------------------


async def test_stream_yields_every_index_once_with_its_answer(pool: VLLMPool) -> None:
    seen: dict[int, str] = {}
    async with stream_batched(pool, PROMPTS) as results:
        async for index, response in results:
            assert index not in seen
            seen[index] = response.text
    assert seen == {i: expected_answer(p, 64)[0] for i, p in enumerate(PROMPTS)}


async def test_stream_arrives_as_settled_and_ordered_returns_input_order() -> None:
    # Endpoint 0 is slow: its prompts settle last, so arrival order is not input order.
    from aurora_swarm.testing import EndpointBehavior

    latency = LatencyModel(prompt_time=0.01, max_concurrent_seqs=8)
    async with fleet_of(2, latency=latency, behaviors={0: EndpointBehavior(slowness=5.0)}) as f:
        async with VLLMPool(f.endpoints, transport=f.transport, model=MODEL, max_tokens=64) as pool:
            async with stream_batched(pool, PROMPTS[:120]) as results:
                arrival = [index async for index, _ in results]
            async with stream_batched(pool, PROMPTS[:120]) as results:
                first = await anext(results)
                ordered = await results.ordered()
    assert sorted(arrival) == list(range(120)) and arrival != sorted(arrival)
    assert [r.text for r in ordered] == [expected_answer(p, 64)[0] for p in PROMPTS[:120]]
    assert ordered[first[0]] == first[1]


async def test_breaking_out_of_the_stream_cancels_the_call() -> None:
    clock = FakeClock(autojump=False)  # the test says when time passes
    latency = LatencyModel(prompt_time=0.2, max_concurrent_seqs=4)
    slow = {1: EndpointBehavior(slowness=10.0)}
    async with fleet_of(2, latency=latency, behaviors=slow, clock=clock) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport, model=MODEL,
                            max_tokens=8) as pool:

            async def first_answers() -> None:
                await until(lambda: clock.sleepers >= 2)  # both endpoints at work
                clock.advance(10.0)  # endpoint 0 is done with 200 prompts; endpoint 1 is not

            async with anyio.create_task_group() as group:
                group.start_soon(first_answers)
                async with stream_batched(pool, [f"p{i}" for i in range(400)]) as results:
                    async for _ in results:
                        break
            # Leaving stopped the call: nothing runs on, and endpoint 1's work was given up.
            totals = fleet.totals()
            assert totals.in_flight == 0 and clock.sleepers == 0
            assert totals.abandoned >= 1 and totals.choices_returned < 400


async def consume(pool: VLLMPool, prompts: list[str], fail: bool = False) -> None:
    async with stream_batched(pool, prompts) as results:
        async for _ in results:
            if fail:
                raise KeyError("mine")


async def test_stream_raises_call_errors_unwrapped(fleet: FakeFleet) -> None:
    async with VLLMPool(fleet.endpoints, transport=fleet.transport, model="no-such-model") as pool:
        with pytest.raises(ConfigurationError, match="it serves: 'fake-model'"):
            await consume(pool, ["a"])


async def test_an_error_in_the_body_leaves_unwrapped(pool: VLLMPool) -> None:
    with pytest.raises(KeyError, match="mine"):
        await consume(pool, PROMPTS, fail=True)


async def test_stream_must_be_entered(pool: VLLMPool) -> None:
    with pytest.raises(ConfigurationError, match="not one string"):
        stream_batched(pool, "one prompt")
    results = stream_batched(pool, ["a"])
    with pytest.raises(RuntimeError, match="async with"):
        await anext(results)


# -- run_job --------------------------------------------------------------------------------------


async def test_run_job_writes_every_item_once_and_reads_back_in_order(
    pool: VLLMPool, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    calls: list[JobProgress] = []
    summary = await run_job(pool, PROMPTS, out, window=37, progress=calls.append,
                            progress_interval=0.01)
    check_answers(out, PROMPTS)
    assert (summary.total, summary.skipped, summary.answered, summary.failed) == (300, 0, 300, 0)
    assert summary.complete and summary.rate > 0
    # Each window of 37 is at least one request per endpoint it reached, far fewer than 300.
    assert 0 < summary.stats.requests < 150
    assert calls[-1].done == 300 and calls[-1].remaining == 0 and calls[-1].eta == 0.0
    records = read_results(out)
    assert [r.index for r in records] == list(range(300))
    assert records[5] == JobResult.from_json(records[5].to_json())
    assert records[5].endpoint in {str(e) for e in pool.endpoints}


async def test_rerun_sends_nothing_and_writes_nothing(pool: VLLMPool, tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    await run_job(pool, PROMPTS, out)
    before = out.read_bytes()
    summary = await run_job(pool, PROMPTS, out)
    assert (summary.skipped, summary.sent, summary.stats.requests) == (300, 0, 0)
    assert out.read_bytes() == before


async def test_resume_cuts_a_torn_last_line_and_sends_only_the_rest(
    pool: VLLMPool, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    await run_job(pool, PROMPTS[:120], out)
    torn = b'{"id": 200, "index": 200, "success": tr'
    with out.open("ab") as handle:
        handle.write(torn)  # what kill -9 in the middle of a write leaves
    summary = await run_job(pool, PROMPTS, out)
    assert (summary.skipped, summary.sent, summary.torn_bytes) == (120, 180, len(torn))
    check_answers(out, PROMPTS)


async def test_failed_items_are_written_and_retried_by_a_rerun(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    prompts = [f"short {i}" if i % 5 else "long " * 80 for i in range(50)]
    # A context of 64 tokens cannot hold the long prompts: they fail, the others are answered.
    async with fleet_of(2, model=MODEL, max_model_len=64) as small:
        async with VLLMPool(small.endpoints, transport=small.transport,
                            model=MODEL, max_tokens=8) as pool:
            summary = await run_job(pool, prompts, out)
            assert (summary.answered, summary.failed) == (40, 10)
            assert summary.failures == {"PromptError": 10} and not summary.complete
            kept = await run_job(pool, prompts, out, retry_failed=False)
            assert (kept.sent, kept.kept_failures, kept.complete) == (0, 10, False)
    failed = [r for r in lines_of(out) if not r["success"]]
    assert len(failed) == 10 and all("context" in r["error"] for r in failed)
    assert {r["cause"] for r in failed} == {"PromptError"} and failed[0]["text"] == ""
    async with fleet_of(2, model=MODEL) as large:
        async with VLLMPool(large.endpoints, transport=large.transport,
                            model=MODEL, max_tokens=8) as pool:
            summary = await run_job(pool, prompts, out)
    assert (summary.skipped, summary.sent, summary.retried_failures) == (40, 10, 10)
    assert summary.complete
    check_answers(out, prompts, 8)


async def test_strict_pool_failures_are_recorded_not_raised(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    async with fleet_of(1, model=MODEL, max_model_len=32) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport,
                            model=MODEL, max_tokens=4, strict=True) as pool:
            summary = await run_job(pool, ["fits", "long " * 60, "fits too"], out)
    assert (summary.answered, summary.failed) == (2, 1)
    assert len(lines_of(out)) == 3


async def test_per_item_settings_meta_and_python_mappings(
    pool: VLLMPool, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    items: list[Any] = [
        {"id": "a", "prompt": "one two three four five", "max_tokens": 2},
        {"id": "b", "prompt": "one two three four five", "meta": {"k": [1]}},
        JobItem("c", "six seven eight", max_tokens=3),
        "a plain prompt",
    ]
    await run_job(pool, items, out, max_tokens=5)
    got = {r.id: r for r in read_results(out)}
    assert got["a"].text == expected_answer("one two three four five", 2)[0]
    assert got["b"].text == expected_answer("one two three four five", 5)[0]
    assert got["b"].meta == {"k": [1]} and got["a"].meta is None
    assert got["c"].text == expected_answer("six seven eight", 3)[0]
    assert got[3].text == expected_answer("a plain prompt", 5)[0] and got[3].index == 3


async def test_conversations_with_a_chat_template_and_system_prompts(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    conversation = [{"role": "user", "content": "hello there"}]
    items = [{"id": 1, "messages": conversation},
             {"id": 2, "prompt": "plain words", "system_prompt": "Be brief."}]
    async with fleet_of(2, model=MODEL, chat_batch=True) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport,
                            model=MODEL, max_tokens=16) as pool:
            summary = await run_job(pool, items, out, chat_template="server")
    got = {r.id: r.text for r in read_results(out)}
    assert got[1] == expected_chat_answer(conversation, 16)[0]
    assert got[2] == expected_answer("plain words", 16)[0]
    assert summary.stats.requests == 2  # one batch request per group of equal settings


async def test_a_conversation_without_a_template_names_the_line(
    pool: VLLMPool, tmp_path: Path
) -> None:
    prompts = write(tmp_path / "p.jsonl", [
        {"prompt": "fine"}, {"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(JobFileError, match=r"p\.jsonl:2: id 2: is a conversation") as info:
        await run_job(pool, PromptFile(prompts), tmp_path / "out.jsonl")
    assert isinstance(info.value.__cause__, PromptError)


async def test_templates_fill_text_lines_and_jsonl_items(pool: VLLMPool, tmp_path: Path) -> None:
    text = tmp_path / "genes.txt"
    text.write_text("BRCA1\n\nTP53\n")
    jsonl = write(tmp_path / "genes.jsonl", [
        {"id": "x", "item": "BRCA1"}, {"id": "y", "item": {"gene": "TP53", "n": 2}}])
    out = tmp_path / "out.jsonl"
    await run_job(pool, PromptFile(text, template="About {item}: {json}"), out)
    got = {r.id: (r.index, r.text) for r in read_results(out)}
    assert got == {1: (0, "ECHO: About BRCA1: {json}"), 3: (1, "ECHO: About TP53: {json}")}
    items = list(PromptFile(jsonl, template="Gene {gene} x{n} {item}"))
    assert [i.prompt for i in items] == ["Gene {gene} x{n} BRCA1", "Gene TP53 x2 {item}"]


async def test_large_input_in_small_windows_keeps_every_answer(
    pool: VLLMPool, tmp_path: Path
) -> None:
    prompts = [f"item {i}" for i in range(5000)]
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(prompts) + "\n")
    out = tmp_path / "out.jsonl"
    summary = await run_job(pool, PromptFile(path), out, window=700, sync_interval=0)
    assert summary.answered == 5000
    records = lines_of(out)
    assert sorted(r["id"] for r in records) == list(range(1, 5001))
    assert all(r["text"] == expected_answer(prompts[r["id"] - 1], 64)[0] for r in records)


# -- what is refused, and how it is said ----------------------------------------------------------


async def test_duplicate_ids_name_both_lines(pool: VLLMPool, tmp_path: Path) -> None:
    path = write(tmp_path / "p.jsonl", [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"},
                                        "", {"id": "a", "prompt": "z"}])
    out = tmp_path / "out.jsonl"
    with pytest.raises(JobFileError, match=r"p\.jsonl:4: id 'a' is used already on line 1"):
        await run_job(pool, PromptFile(path), out)
    assert not out.exists()  # nothing is sent or written before the input is known good
    with pytest.raises(JobFileError, match=r"items\[2\]: id 'k' is used already by items\[0\]"):
        await run_job(pool, [JobItem("k", "x"), "y", {"id": "k", "prompt": "z"}], out)


@pytest.mark.parametrize(("content", "message"), [
    (b'{"prompt": "ok"}\n{"prompt": "x",}\n', r":2: is not valid JSON \(Expecting"),
    (b'{"prompt": "ok"}\n\n["a list"]\n', r":3: expected a JSON object, got a list"),
    (b'{"prompt": "x", "temperature": 0.5}\n', r":1: per-item 'temperature' is not supported"),
    (b'{"prompt": "x", "colour": 1}\n', r":1: unknown key 'colour'.*under 'meta'"),
    (b'{"id": 1}\n', r":1: needs exactly one of 'prompt', 'messages' or 'item'$"),
    (b'{"prompt": "x", "messages": []}\n', r"got \['prompt', 'messages'\]"),
    (b'{"messages": [{"role": "user"}]}\n', r":1: 'messages' must be a non-empty list"),
    (b'{"prompt": 3}\n', r":1: 'prompt' must be a string, got a number"),
    (b'{"id": [1], "prompt": "x"}\n', r":1: 'id' must be a string or an integer, got a list"),
    (b'{"id": true, "prompt": "x"}\n', r"'id' must be a string or an integer, got a boolean"),
    (b'{"prompt": "x", "max_tokens": 0}\n', r":1: 'max_tokens' must be a positive integer"),
    (b'{"prompt": "x", "system_prompt": 1}\n', r":1: 'system_prompt' must be a string"),
    (b'{"item": "x"}\n', r":1: has an 'item' but no template was given"),
    (b'{"prompt": "ok"}\n{"prompt": "\xff"}\n', r":2: is not UTF-8 text"),
])
def test_malformed_jsonl_lines_are_named(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(content)
    with pytest.raises(JobFileError, match=message) as info:
        list(PromptFile(path))
    assert isinstance(info.value, ConfigurationError)
    assert str(info.value).startswith(str(path))


def test_missing_and_odd_prompt_files(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match=r"nope\.txt: no such file"):
        list(PromptFile(tmp_path / "nope.txt"))
    with pytest.raises(JobFileError, match="is a directory"):
        list(PromptFile(tmp_path))
    text = tmp_path / "p.txt"
    text.write_text("a\n")
    with pytest.raises(JobFileError, match=r"p\.txt:1: the template has no \{item\}"):
        list(PromptFile(text, template="no placeholder"))
    assert PromptFile(text).kind == "text" and PromptFile(text, "jsonl").kind == "jsonl"
    assert PromptFile(tmp_path / "x.NDJSON").kind == "jsonl"


async def test_an_empty_prompts_file_is_refused_and_an_empty_list_is_nothing_to_do(
    pool: VLLMPool, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(JobFileError, match=r"empty\.txt: holds no prompts"):
        await run_job(pool, PromptFile(empty), tmp_path / "out.jsonl")
    summary = await run_job(pool, [], tmp_path / "out.jsonl")
    assert (summary.total, summary.sent, summary.complete) == (0, 0, True)


def test_bad_python_items_are_named() -> None:
    from aurora_swarm._job_input import as_items

    with pytest.raises(JobFileError, match=r"items\[1\]: expected a prompt .* got a number"):
        list(as_items(["ok", 3]))  # type: ignore[list-item]
    with pytest.raises(JobFileError, match="not one string"):
        as_items("one prompt")


async def test_a_results_file_that_is_not_one_names_the_line(
    pool: VLLMPool, tmp_path: Path
) -> None:
    out = write(tmp_path / "out.jsonl", [{"id": 0, "success": True}, "not json",
                                        {"id": 1, "success": True}])
    with pytest.raises(JobFileError, match=r"out\.jsonl:2: is not a result record"):
        await run_job(pool, PROMPTS, out)
    with pytest.raises(JobFileError, match="no such file"):
        read_results(tmp_path / "missing.jsonl")


async def test_a_second_run_on_the_same_results_file_is_refused(
    pool: VLLMPool, tmp_path: Path
) -> None:
    from aurora_swarm._job_output import ResultsFile

    out = tmp_path / "out.jsonl"
    held = ResultsFile.open(out, retry_failed=True)
    try:
        with pytest.raises(JobFileError, match="another run is writing this results file"):
            await run_job(pool, PROMPTS, out)
    finally:
        held.close()
        held.close()
    await run_job(pool, PROMPTS[:3], out)


async def test_a_model_the_fleet_does_not_serve_lists_what_it_serves(
    fleet: FakeFleet, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    async with VLLMPool(fleet.endpoints, transport=fleet.transport, model="llama-9000") as pool:
        with pytest.raises(ConfigurationError,
                           match="does not serve the model 'llama-9000'; it serves: 'fake-model'"):
            await run_job(pool, PROMPTS, out)
    assert not out.exists()


async def test_an_unreachable_fleet_is_said_plainly(tmp_path: Path) -> None:
    async with fleet_of(1) as fleet:
        dead = fleet.endpoints[0]
    async with VLLMPool([dead], model=MODEL, retry=RetryPolicy(max_attempts=1),
                        transport=fleet.transport) as pool:
        with pytest.raises(EndpointUnavailable, match=r"unreachable.*connection failed") as info:
            await run_job(pool, PROMPTS, tmp_path / "out.jsonl")
    assert str(dead) in str(info.value)


async def test_bad_job_arguments_raise_at_once(pool: VLLMPool, tmp_path: Path) -> None:
    for kwargs in ({"window": 0}, {"window": True}, {"sync_interval": -1.0}):
        with pytest.raises(ConfigurationError):
            await run_job(pool, PROMPTS, tmp_path / "o.jsonl", **kwargs)

