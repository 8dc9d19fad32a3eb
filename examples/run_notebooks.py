"""Execute every notebook in ``examples/notebooks`` top to bottom; fail on any error.

Usage: ``python examples/run_notebooks.py [NOTEBOOK ...] [--timeout S] [--output DIR]``

Each notebook runs in a fresh kernel (the ``python3`` kernel of this interpreter) with its
own directory as the working directory. A cell that raises, or a notebook that takes longer
than ``--timeout`` seconds per cell, fails the run. The stored notebooks carry no outputs;
``--output DIR`` writes the executed copies there for reading. Also checks that the stored
notebooks have no outputs, so their diffs stay small.

Needs ``nbclient``, ``nbformat`` and ``ipykernel`` (the ``docs`` extra).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

HERE = Path(__file__).resolve().parent / "notebooks"


def stored_outputs(notebook: nbformat.NotebookNode) -> int:
    """Code cells of a stored notebook that carry outputs or an execution count."""
    return sum(1 for cell in notebook.cells if cell.cell_type == "code"
               and (cell.get("outputs") or cell.get("execution_count") is not None))


def run(path: Path, timeout: int, output: Path | None) -> str | None:
    """Execute one notebook; return an error message, or ``None`` when it ran clean."""
    notebook = nbformat.read(path, as_version=4)
    dirty = stored_outputs(notebook)
    if dirty:
        return (f"{dirty} code cell(s) are stored with outputs; clear them "
                "(Jupyter: Edit > Clear Outputs of All Cells) before committing")
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except CellExecutionError as exc:
        return str(exc)
    finally:
        if output is not None:
            output.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, output / path.name)
    errors = [o for cell in notebook.cells for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
    return f"{len(errors)} error output(s)" if errors else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to run (default: examples/notebooks/*.ipynb)")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per cell")
    parser.add_argument("--output", type=Path, help="write the executed notebooks here")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(HERE.glob("*.ipynb"))
    if not paths:
        print("no notebooks found", file=sys.stderr)
        return 1
    failed = []
    for path in paths:
        start = time.perf_counter()
        error = run(path, args.timeout, args.output)
        seconds = time.perf_counter() - start
        print(f"{'ok' if error is None else 'FAILED':6} {path.name} ({seconds:.1f} s)")
        if error is not None:
            print(error, file=sys.stderr)
            failed.append(path.name)
    if failed:
        print(f"{len(failed)} of {len(paths)} notebooks failed: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
