"""OpenAI batch files through ``aurora-swarm run`` and ``run_batch_file``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion

from aurora_swarm import VLLMPool
from aurora_swarm._openai_batch import run_batch_file
from aurora_swarm.jobs import JobFileError
from aurora_swarm.testing import expected_answer

from .conftest import fleet_of
from .test_cli import Fleet, cli

MODEL = "fake-model"
# The command line run as a process against a fleet process: integration tests, left out of the
# unit suite by `-m "not integration"`; run_batch_file's own tests use the in-process fleet.
INTEGRATION = pytest.mark.integration


def request(i: int, *, chat: bool, temperature: float = 0.0, max_tokens: int = 16,
            custom_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "max_tokens": max_tokens, "temperature": temperature}
    if chat:
        body["messages"] = [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": f"chat question {i}"}]
    else:
        body["prompt"] = f"completion prompt {i}"
    return {"custom_id": custom_id or f"request-{i}", "method": "POST",
            "url": "/v1/chat/completions" if chat else "/v1/completions", "body": body}


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def check_output(path: Path, sent: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every line valid OpenAI batch output, each custom_id once, each answer its own."""
    lines = [json.loads(raw) for raw in path.read_text().splitlines()]
    by_id = {line["custom_id"]: line for line in lines}
    assert len(by_id) == len(lines) == len(sent)
    for record in sent:
        line = by_id[record["custom_id"]]
        assert set(line) == {"id", "custom_id", "response", "error"}
        assert line["error"] is None and line["response"]["status_code"] == 200
        assert line["id"].startswith("batch_req_") and line["response"]["request_id"]
        body = record["body"]
        if record["url"] == "/v1/chat/completions":
            answer = ChatCompletion.model_validate(line["response"]["body"])
            text = answer.choices[0].message.content
            prompt = body["messages"][-1]["content"]
        else:
            completion = Completion.model_validate(line["response"]["body"])
            text = completion.choices[0].text
            prompt = body["prompt"]
        assert (text, answer_reason(line)) == expected_answer(prompt, body["max_tokens"])
    return by_id


def answer_reason(line: dict[str, Any]) -> str:
    return str(line["response"]["body"]["choices"][0]["finish_reason"])


@pytest.fixture(scope="module")
def chat_fleet(tmp_path_factory: pytest.TempPathFactory) -> Any:
    running = Fleet(tmp_path_factory.mktemp("fleet"), "--chat-batch")
    yield running
    running.stop()


@INTEGRATION
def test_a_10000_line_mixed_batch_file_runs_through_the_cli(chat_fleet: Fleet,
                                                              tmp_path: Path) -> None:
    sent = [request(i, chat=i % 2 == 1, temperature=(0.0, 0.7, 1.0)[i % 3],
                    max_tokens=(16, 3)[i % 5 == 0]) for i in range(10_000)]
    source = write_jsonl(tmp_path / "batch_input.jsonl", sent)
    out = tmp_path / "batch_output.jsonl"
    result = cli("run", source, "--hostfile", chat_fleet.hostfile, "--model", MODEL,
                 "-o", out, "--progress", "none")
    assert result.returncode == 0, result.stderr
    check_output(out, sent)
    rows = dict(line.split(None, 1) for line in result.stdout.splitlines()[1:])
    requests = int(rows["requests"].split()[0])
    print(f"10,000 lines (12 kinds of bodies) -> {requests} HTTP requests")
    assert requests <= 10_000 / 50  # far fewer requests than lines
    assert "10000 in " in rows["items"] and "10000 sent now" in rows["items"]
    again = cli("run", source, "--hostfile", chat_fleet.hostfile, "--model", MODEL,
                "-o", out, "--progress", "none")
    assert again.returncode == 0 and "10000 done before, 0 sent now" in again.stdout
    assert len(out.read_text().splitlines()) == 10_000


async def test_chat_lines_fall_back_to_one_request_each_without_a_batch_route(
    tmp_path: Path,
) -> None:
    sent = [request(i, chat=i < 5) for i in range(20)]
    source = write_jsonl(tmp_path / "in.jsonl", sent)
    async with fleet_of(2, model=MODEL) as fleet:  # no chat batch route, no template
        async with VLLMPool(fleet.endpoints, model=MODEL, transport=fleet.transport) as pool:
            summary = await run_batch_file(pool, source, tmp_path / "out.jsonl")
            chat_requests = fleet.totals().chat_requests
    assert summary.answered == 20 and summary.complete
    check_output(tmp_path / "out.jsonl", sent)
    assert chat_requests == 5


async def test_failed_lines_are_written_as_errors_and_sent_again(tmp_path: Path) -> None:
    sent = [request(0, chat=False), request(1, chat=False)]
    sent[1]["body"]["prompt"] = "long " * 5000  # longer than the context
    source = write_jsonl(tmp_path / "in.jsonl", sent)
    out = tmp_path / "out.jsonl"
    async with fleet_of(1, model=MODEL, max_model_len=512) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, transport=fleet.transport) as pool:
            first = await run_batch_file(pool, source, out)
            failed = json.loads(out.read_text().splitlines()[-1])
            second = await run_batch_file(pool, source, out)
    assert (first.answered, first.failed) == (1, 1)
    assert failed["custom_id"] == "request-1" and failed["response"] is None
    assert failed["error"]["code"] == "HTTP 400" and failed["error"]["message"]
    assert (second.skipped, second.failed) == (1, 1)
    assert [json.loads(x)["custom_id"] for x in out.read_text().splitlines()] == [
        "request-0", "request-1"]  # the failed line was replaced, not repeated


@pytest.mark.parametrize(("change", "message"), [
    ({"url": "/v1/embeddings"}, "'url' must be one of"),
    ({"custom_id": ""}, "'custom_id' must be a non-empty string"),
    ({"body": {"model": "other", "prompt": "x"}}, "is not the fleet's model"),
    ({"body": {"prompt": "x", "n": 2}}, "'n' must be 1"),
    ({"body": {"prompt": ["a", "b"]}}, "'prompt': a string"),
    ({"url": "/v1/chat/completions", "body": {"prompt": "x"}}, "needs 'messages'"),
    ({"custom_id": "request-0"}, "is used already on line 1"),
])
async def test_bad_lines_are_refused_naming_the_line(
    tmp_path: Path, change: dict[str, Any], message: str,
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [request(0, chat=False),
                                                 {**request(1, chat=False), **change}])
    async with fleet_of(1, model=MODEL) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, transport=fleet.transport) as pool:
            with pytest.raises(JobFileError, match=message) as caught:
                await run_batch_file(pool, source, tmp_path / "out.jsonl")
    assert "in.jsonl:2: " in str(caught.value)


@INTEGRATION
def test_a_run_says_first_whether_it_starts_or_resumes(chat_fleet: Fleet, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(50)))
    out = tmp_path / "results.jsonl"
    args = ("run", prompts, "--hostfile", chat_fleet.hostfile, "--model", MODEL, "-o", out,
            "--progress", "none")
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stderr.splitlines() == [
        f"aurora-swarm run: starting {out}: 50 to send over 4 endpoints"]
    again = cli(*args)
    assert again.stderr.splitlines()[0] == (
        f"aurora-swarm run: resuming {out}: 50 of 50 done, 0 to send over 4 endpoints")
