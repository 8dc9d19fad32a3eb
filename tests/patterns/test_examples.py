"""The Examples sections of the pattern docstrings run and say what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["_base", "aggregators", "blackboard", "broadcast", "pipeline", "scatter_gather",
           "tree_reduce"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"aurora_swarm.patterns.{name}")
    result = doctest.testmod(module, globs={}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
