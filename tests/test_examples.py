"""The examples run, print what the docs say they print, and the docs show only run code.

Every ``examples/*.py`` script runs in a subprocess against its own fake fleet (the hostfile
quickstart against a fleet in another process, as the getting-started page tells a reader).
The notebooks are executed by ``python examples/run_notebooks.py`` (CI); here they are only
checked to be stored without outputs. The docs' Python code must come from the examples
(``literalinclude``), so every code block a reader sees is run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Loopback servers and subprocesses: integration tests, left out of the unit suite by
# `-m "not integration"`.
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DOCS = ROOT / "docs"
TOOLS = {"run_notebooks.py"}
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py") if p.name not in TOOLS)
NOTEBOOKS = sorted((EXAMPLES / "notebooks").glob("*.ipynb"))

# What each example must print (regular expressions, searched in its standard output).
EXPECTED: dict[str, list[str]] = {
    "microbatching.py": [r"200 prompts from 20 agents, each answer its own: True",
                         r"\d+ HTTP requests; mean batch \d+\.\d"],
    "quickstart.py": [r"-> 'ECHO: Name one use of element number 10\.' \(agent \d\)",
                      r"10 prompts, 10 answered, \d HTTP requests"],
    "quickstart_hostfile.py": [r"4 endpoints, the first is 127\.0\.0\.1:\d+",
                               r"ECHO: Name one use of element number 1\.",
                               r"10/10 answered with \d HTTP requests"],
    "hostfiles.py": [r"Endpoint\('x1000c0s0b0n0', 8000, \{'model': 'llama', 'role': 'worker'",
                     r"Endpoint\('x1000c0s1b0n0', 8001\) +http://x1000c0s1b0n0:8001/v1",
                     r"HostfileError: port 'eight-thousand' is not a whole number \(line 2\)",
                     r"https://inference\.example\.org:443"],
    "endpoints_and_pools.py": [r"role=worker", r"sizes: 6 2 4 2 2 3", r"0 True",
                               r"prompts per endpoint: +\[10, 10, 10, 10, 1, 0\]"],
    "batching.py": [r"batched: +\d{1,3} HTTP requests, .* 1000 answered",
                    r"one per prompt: +1000 HTTP requests, .* 1000 answered",
                    r"post_batch: 50 answers from 1 request"],
    "order_and_failures.py": [r"200 answers for 200 prompts; every answer in its prompt's slot: "
                              r"True",
                              r"\d+ prompts needed a second request; all answered: True",
                              r"answers\[13\]: success=False, PromptError",
                              r"199/200 usable, 1 failed", r"BatchError: 1 of 200 prompts failed"],
    "retries_and_health.py": [r"answered 600/600 with \d+ requests",
                              r"endpoint 3 alive: False",
                              r"fleet down: 20 failed in \d+\.\d s; EndpointUnavailable"],
    "chat_templates.py": [r"'<s><\|user\|>\\nDefine term 0\.<\|end\|>\\n<\|assistant\|>\\n'",
                          r"raw text .* \d requests \(\d completions\); 100 answered",
                          r"client template .* \d requests \(\d completions\); 100 answered",
                          r"auto -> model directory template .* \(\d completions\); 100 answered",
                          r"send_all .* 100 requests \(100 chat\); 100 answered",
                          r"server \(chat/completions/batch\) +\d requests \(\d chat/batch\)"],
    "pattern_scatter_gather.py": [r"^ECHO: What does TP53 do\?$",
                                  r'Check ECHO: Summarize what TP53 does\. and answer \{"ok"',
                                  r"6 genes, 3 steps, \d+ HTTP requests"],
    "pattern_tree_reduce.py": [r"root: ECHO: Merge:", r"answers per level: \[20, 5, 2, 1\]",
                               r"\(12, 14, 15, 16\)", r"path of leaf 6 to the root: \[\(0, 6\)",
                               r"dropped: level 0, index 13, failed"],
    "pattern_broadcast.py": [r"16 answers; winner .* with 16/16 votes",
                             r"ECHO: Pick the best name:", r"^\[0, 1, 2, 3\]$"],
    "pattern_blackboard.py": [r"stopped after 2 rounds", r"hypotheses: 4 entries",
                              r"critiques: 2 entries"],
    "pattern_pipeline.py": [r"stage 0 'ideas': 4 prompts, 4 kept, 0 dropped",
                            r"stage 1 'refine': 4 prompts, 4 kept",
                            r"stage 2 'pick': 1 prompts, 1 kept", r"report: 'ECHO: Write one"],
    "pattern_aggregators.py": [r"vote: 'yes' 3/4 \(75%\), abstained 1",
                               r"statistics: n=3 mean=61\.17 median=61\.5",
                               r"'genes': \['BRCA1', 'TP53'\].*conflicts \('organism',\)",
                               r"best_of: a much longer draft", r"3/4 usable, 1 failed"],
    "stream_results.py": [r"first settled: prompt \d+: 'ECHO: Score candidate molecule \d+\.'",
                          r"400 settled, each once: True",
                          r"\['ECHO: Score candidate molecule 0\.', 'ECHO: Score candidate"],
    "logging_setup.py": [r"^aurora_swarm\.health WARNING 127\.0\.0\.1:\d+ benched after",
                         r"^aurora_swarm\.health INFO 127\.0\.0\.1:\d+ is back",
                         r"^aurora_swarm\.pool INFO send_all_batched: 6000 prompts over 3 "
                         r"endpoints .* prompts retried", r"^6000/6000 answered$"],
    "tables.py": [r"doi-00000 +abstract of paper 0 +ECHO: Summarize: abstract of paper 0 +True",
                  r"10000 rows, all answered: True",
                  r"Dataset job: 500 rows, columns \['id', 'text', 'success', 'finish_reason'\]",
                  r"\d+ HTTP requests for 10,500 prompts"],
    "servers.py": [r"300 answers, each its prompt's: True",
                   r"endpoint 0: lists=True, health=None, metrics=(True|None)",
                   r"endpoint 2: lists=False, health=None, metrics=(False|None)",
                   r"endpoint 2 alone: 50 answered with 50 single and 0 batched requests",
                   r"servers that never answer: 20 failed in \d\.\d s: not answered within "
                   r"the call's deadline of 1 s"],
    "batch_job.py": [r"the results file holds \d+ lines", r"skipped \d+, answered \d+, "
                     r"failed 0, complete: True", r"3000 records, ids unique: True",
                     r"q0 ECHO: Classify abstract 0\. True"],
}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AURORA_SWARM_API_KEY"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def fleet_hostfile(tmp_path: Path) -> Iterator[Path]:
    """A fake fleet of 4 endpoints in another process, and the hostfile it wrote."""
    hostfile = tmp_path / "fleet.hostfile"
    process = subprocess.Popen(
        [sys.executable, "-m", "aurora_swarm.testing", "--endpoints", "4",
         "--hostfile", str(hostfile)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    try:
        deadline = time.monotonic() + 30
        while not hostfile.exists():
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the fake fleet did not write its hostfile"
            time.sleep(0.05)
        yield hostfile
    finally:
        process.terminate()
        process.wait(10)
        if process.stderr is not None:
            process.stderr.close()


def run_script(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, timeout=100, cwd=ROOT, env=_env(), check=False)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    assert not done.stderr.strip(), f"{name} wrote to stderr:\n{done.stderr}"
    return done.stdout


@pytest.mark.parametrize("name", [s for s in SCRIPTS if s != "quickstart_hostfile.py"])
def test_example_runs(name: str) -> None:
    out = run_script(name)
    assert name in EXPECTED, f"add what {name} must print to EXPECTED"
    for pattern in EXPECTED[name]:
        assert re.search(pattern, out, re.MULTILINE), f"{name}: no {pattern!r} in:\n{out}"


def test_quickstart_against_a_fleet_process(fleet_hostfile: Path) -> None:
    out = run_script("quickstart_hostfile.py", str(fleet_hostfile))
    for pattern in EXPECTED["quickstart_hostfile.py"]:
        assert re.search(pattern, out, re.MULTILINE), f"no {pattern!r} in:\n{out}"


def test_every_expectation_has_a_script() -> None:
    assert sorted(EXPECTED) == SCRIPTS


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_has_an_entry_point(name: str) -> None:
    source = (EXAMPLES / name).read_text()
    assert source.startswith('"""'), f"{name} starts with a docstring saying what it shows"
    assert f"python examples/{name}" in source, f"{name}'s docstring says how to run it"
    assert 'if __name__ == "__main__":' in source


# -- notebooks ------------------------------------------------------------------------------------


def test_four_notebooks() -> None:
    names = [p.name for p in NOTEBOOKS]
    assert names == ["01_quickstart.ipynb", "02_map_then_tree_reduce.ipynb",
                     "03_long_batch_job.ipynb", "04_semantic_uncertainty.ipynb",
                     "05_progress_logs_tables.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_stored_without_outputs(path: Path) -> None:
    notebook = json.loads(path.read_text())
    assert notebook["nbformat"] == 4
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, (
                f"{path.name}: clear the outputs before committing")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_uses_top_level_await(path: Path) -> None:
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    code = "\n".join("".join(c["source"]) for c in cells)
    assert re.search(r"^\S.*\bawait\b", code, re.MULTILINE)
    assert "asyncio.run(" not in code and "anyio.run(" not in code
    assert "await fleet.aclose()" in code, "a notebook stops the fleet it started"


# -- the docs show only code that runs -----------------------------------------------------------


def doc_sources() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.rst")
                  if not {"_build", "_generated"} & set(p.relative_to(DOCS).parts))


PYTHON_BLOCK = re.compile(r"^\s*\.\. (code-block|code|sourcecode)::\s*(python|py|pycon|ipython)"
                          r"\d?\s*$", re.MULTILINE)


@pytest.mark.parametrize("path", doc_sources(), ids=lambda p: str(p.relative_to(DOCS)))
def test_docs_python_comes_from_examples(path: Path) -> None:
    text = path.read_text()
    assert not PYTHON_BLOCK.search(text), (
        f"{path.name}: show Python with literalinclude of an examples/ script (run by CI), "
        "not a code block")
    for target in re.findall(r"^\s*\.\. literalinclude::\s*(\S+)", text, re.MULTILINE):
        resolved = (path.parent / target).resolve()
        if resolved.suffix == ".py" and EXAMPLES in resolved.parents:
            assert resolved.parent == EXAMPLES and resolved.name in SCRIPTS, (
                f"{path.name} shows {target}, which no test runs")


def test_every_example_is_in_the_docs() -> None:
    shown = "\n".join(p.read_text() for p in doc_sources())
    missing = [s for s in SCRIPTS if f"examples/{s}" not in shown]
    assert not missing, f"examples no docs page shows: {missing}"
