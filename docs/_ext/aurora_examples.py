"""Sphinx extension: run the examples at build time, so the outputs the docs show are real.

At ``builder-inited``:

* every ``examples/*.py`` script is run (in parallel, each with a time limit) and its standard
  output is written to ``docs/_generated/examples/<name>.txt``, which pages show with
  ``literalinclude``; a script that fails or times out fails the build with its error output;
* ``examples/quickstart_hostfile.py`` is run against a fleet started with
  ``python -m aurora_swarm.testing``, the way the getting-started page tells a reader to (the
  hostfile that fleet wrote is kept, as ``fleet.hostfile.txt``);
* ``aurora-swarm demo`` is run and its output written to
  ``docs/_generated/examples/aurora-swarm-demo.txt``;
* ``docs/_generate_cli.py`` (the command-line page's outputs), when it exists, is run;
* every notebook in ``examples/notebooks`` is written out as a percent-format script
  (``# %%`` cells, Markdown as comments) to ``docs/_generated/notebooks/<name>.py``.

Nothing here is cached: a build shows what the code prints today. The output directories get
a ``.gitignore`` of their own, so what a build writes is never committed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
GENERATED = ROOT / "docs" / "_generated"
CLI_GENERATOR = ROOT / "docs" / "_generate_cli.py"
TIMEOUT = 120.0
CLI_TIMEOUT = 300.0  # the command-line page runs a dozen timed scenarios, one after another
HELPERS = {"run_notebooks.py"}  # scripts that are tools, not examples

logger = logging.getLogger(__name__)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("AURORA_SWARM_API_KEY", None)
    return env


def _run(args: list[str], name: str, timeout: float = TIMEOUT) -> str:
    try:
        done = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT, env=_env(), check=False)
    except subprocess.TimeoutExpired as exc:
        raise ExtensionError(f"example {name} took longer than {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise ExtensionError(f"example {name} failed (exit {done.returncode}):\n{done.stderr}")
    return done.stdout


def _with_fleet(script: Path) -> str:
    """Run a script that takes a hostfile, against a fleet in another process."""
    with tempfile.TemporaryDirectory() as tmp:
        hostfile = Path(tmp) / "fleet.hostfile"
        fleet = subprocess.Popen(
            [sys.executable, "-m", "aurora_swarm.testing", "--endpoints", "4",
             "--hostfile", str(hostfile)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, env=_env())
        try:
            deadline = time.monotonic() + 30
            while not hostfile.exists():
                if fleet.poll() is not None or time.monotonic() > deadline:
                    error = fleet.stderr.read().decode() if fleet.stderr else ""
                    raise ExtensionError(f"the fake fleet for {script.name} did not start:\n"
                                         f"{error}")
                time.sleep(0.05)
            shown = GENERATED / "examples" / "fleet.hostfile.txt"
            shown.write_text(hostfile.read_text(encoding="utf-8"), encoding="utf-8")
            return _run([str(script), str(hostfile)], script.name)
        finally:
            fleet.terminate()
            fleet.wait(10)


def run_example(script: Path) -> str:
    """The standard output of one example."""
    if script.name == "quickstart_hostfile.py":
        return _with_fleet(script)
    return _run([str(script)], script.name)


def examples() -> list[Path]:
    """The example scripts."""
    return sorted(p for p in EXAMPLES.glob("*.py") if p.name not in HELPERS)


def notebook_as_script(path: Path) -> str:
    """A notebook as a percent-format script: code as it is, Markdown as comments."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    parts = []
    for cell in notebook["cells"]:
        source = "".join(cell["source"]).rstrip()
        if cell["cell_type"] == "markdown":
            lines = [f"# {line}".rstrip() for line in source.splitlines()]
            parts.append("# %% [markdown]\n" + "\n".join(lines))
        elif cell["cell_type"] == "code":
            parts.append("# %%\n" + source)
    return "\n\n".join(parts) + "\n"


def _output_dir(name: str) -> Path:
    path = GENERATED / name
    path.mkdir(parents=True, exist_ok=True)
    (path / ".gitignore").write_text("# written by docs/_ext/aurora_examples.py at build time\n*\n")
    return path


def _generate(app: Sphinx) -> None:
    examples_out = _output_dir("examples")
    _output_dir("notebooks")
    for notebook in sorted((EXAMPLES / "notebooks").glob("*.ipynb")):
        target = GENERATED / "notebooks" / f"{notebook.stem}.py"
        target.write_text(notebook_as_script(notebook), encoding="utf-8")
    scripts = examples()
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool:
        demo = pool.submit(_run, ["-m", "aurora_swarm.cli", "demo"], "aurora-swarm demo")
        cli = None
        if CLI_GENERATOR.exists():
            cli = pool.submit(_run, [str(CLI_GENERATOR)], CLI_GENERATOR.name, CLI_TIMEOUT)
        outputs = list(pool.map(run_example, scripts))
    (examples_out / "aurora-swarm-demo.txt").write_text(demo.result(), encoding="utf-8")
    if cli is not None:
        cli.result()
    for script, output in zip(scripts, outputs, strict=True):
        (examples_out / f"{script.stem}.txt").write_text(output, encoding="utf-8")
    logger.info("ran %d examples in %.1f s", len(scripts), time.perf_counter() - start)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", _generate)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
