"""Sphinx extension: the docstrings of re-exported constants and type aliases.

A constant or type alias (``Prompt``, ``DEFAULT_SEPARATOR``, ``ACTIONS``) is documented by the
string literal under its assignment, in the module that defines it. ``autodoc`` looks for that
string only in the module a directive names (``aurora_swarm``, not ``aurora_swarm._prompts``)
and otherwise shows the value's own class docstring (``str``'s, ``dict``'s). This hook finds the
attribute docstring in the defining module instead.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Any

from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docstrings import prepare_docstring

PACKAGE = "aurora_swarm"


@cache
def attribute_docs() -> dict[str, list[tuple[Any, list[str]]]]:
    """Every module-level attribute docstring in the package: name -> [(value, lines)]."""
    package = importlib.import_module(PACKAGE)
    found: dict[str, list[tuple[Any, list[str]]]] = {}
    names = [PACKAGE] + [m.name for m in pkgutil.walk_packages(package.__path__, PACKAGE + ".")]
    for name in names:
        module = importlib.import_module(name)
        try:
            docs = ModuleAnalyzer.for_module(name).find_attr_docs()
        except Exception:  # a module without source: nothing to find
            continue
        for (scope, attr), lines in docs.items():
            if scope == "" and hasattr(module, attr):
                found.setdefault(attr, []).append((getattr(module, attr), list(lines)))
    return found


def docstring_of(name: str, value: Any) -> list[str] | None:
    """The attribute docstring of the module-level ``name`` whose value is ``value``."""
    for candidate, lines in attribute_docs().get(name.rsplit(".", 1)[-1], []):
        if candidate is value:
            return lines
    return None


def _fill(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    if what not in ("data", "attribute") or not name.startswith(PACKAGE + "."):
        return
    found = docstring_of(name, obj)
    if found is not None:
        lines[:] = prepare_docstring("\n".join(found))
    elif lines and lines == prepare_docstring(type(obj).__doc__ or ""):
        lines[:] = []  # the value's class docstring (str's, dict's) says nothing about it


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("autodoc-process-docstring", _fill)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
