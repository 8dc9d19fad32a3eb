"""How pool statistics and job summaries print: short tables, HTML, plain data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aurora_swarm import EndpointStats, PoolStats, VLLMPool
from aurora_swarm.jobs import run_job
from aurora_swarm.testing import EndpointBehavior

from .conftest import fleet_of

MODEL = "fake-model"


async def test_pool_stats_print_as_a_table_with_failing_endpoints_first() -> None:
    behaviors = {2: EndpointBehavior(script=("503",))}
    async with fleet_of(3, model=MODEL, behaviors=behaviors) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8,
                            transport=fleet.transport) as pool:
            await pool.send_all_batched([f"p{i}" for i in range(300)])
            stats = pool.stats()
            troubled = str(fleet.endpoints[2])
    lines = str(stats).splitlines()
    assert lines[0].split() == ["endpoint", "requests", "prompts", "answered", "retries",
                                "failed", "requests", "tokens", "p50", "p95"]
    assert set(lines[1]) == {"-", " "}
    assert lines[2].startswith(troubled) and "HTTP 503: 1" in lines[2]
    assert lines[-1].startswith("all 3") and "300" in lines[-1]
    assert len(lines) == 2 + 3 + 1
    html = stats._repr_html_()
    assert html.startswith("<table>") and "HTTP 503: 1" in html and html.count("<tr>") == 5
    data = stats.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["answered"] == 300 and len(data["endpoints"]) == 3
    assert data["endpoints"][2]["endpoint"] == fleet.endpoints[2].url
    assert data["endpoints"][2]["failures"] == {"HTTP 503": 1}
    one: EndpointStats = stats.endpoints[0]
    assert str(one).splitlines()[2].startswith(str(one.endpoint))
    assert one.to_dict()["requests"] == one.requests


async def test_a_large_pool_prints_a_bounded_table() -> None:
    async with fleet_of(25, model=MODEL) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8,
                            transport=fleet.transport) as pool:
            await pool.send_all_batched(["a", "b"])
            stats: PoolStats = pool.stats()
    lines = str(stats).splitlines()
    assert len(lines) == 2 + 20 + 1 + 1
    assert lines[-1] == "(5 more endpoints; to_dict() lists all)"
    assert len(stats.to_dict()["endpoints"]) == 25


async def test_job_summary_prints_names_failing_endpoints_and_exports(tmp_path: Path) -> None:
    behaviors = {1: EndpointBehavior(script=("503",))}
    async with fleet_of(2, model=MODEL, behaviors=behaviors) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8,
                            transport=fleet.transport) as pool:
            summary = await run_job(pool, [f"q{i}" for i in range(50)], tmp_path / "r.jsonl")
    text = str(summary)
    assert "answered" in text and "50" in text and "complete" in text
    assert f"failing endpoints  {fleet.endpoints[1]} (HTTP 503: 1)" in text
    assert "<caption>JobSummary</caption>" in summary._repr_html_()
    data = summary.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["answered"] == 50 and data["complete"] is True
    assert data["stats"]["requests"] == summary.stats.requests


def test_cli_errors_name_options_not_arguments() -> None:
    from aurora_swarm._cli_run import cli_words

    assert cli_words("chat_template='auto' found no way") == "--chat-template='auto' found no way"
    assert cli_words("system_prompt must be a str") == "--system-prompt must be a str"
    assert cli_words("sampling may not set ['n']") == "--sampling may not set ['n']"
    # A quoted name is a JSONL key, and a longer word is not an argument.
    assert cli_words("'max_tokens' must be a positive integer") == (
        "'max_tokens' must be a positive integer")
    assert cli_words("max_tokens_per_call") == "max_tokens_per_call"


def test_cli_sampling_values_are_checked_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from .test_cli import main_of

    code, _, err = main_of(["run", str(tmp_path / "none.txt"), "--hostfile",
                            str(tmp_path / "none.hostfile"), "--model", MODEL, "-o",
                            str(tmp_path / "out.jsonl"), "--sampling", "temperature=hot"], capsys)
    assert code == 2
    assert "error: argument --sampling: temperature must be a number >= 0, got 'hot'" in err
