"""Sphinx configuration for the aurora_swarm docs."""

from __future__ import annotations

import sys
from pathlib import Path

import aurora_swarm

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "aurora_swarm"
author = "aurora_swarm developers"
copyright = "2026, aurora_swarm developers"  # noqa: A001
release = aurora_swarm.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "sphinx.ext.doctest",
    "aurora_examples",  # runs examples/*.py so pages show their real output
    "aurora_autodoc",  # docstrings of re-exported constants and type aliases
]

nitpicky = True
# Names from libraries whose docs are not linked, and typing internals autodoc cannot resolve.
nitpick_ignore_regex = [
    (r"py:.*", r"(anyio|attrs|openai|httpx2|tenacity|jinja2|h11|numpy|scipy|pandas|datasets|tqdm)\..*"),
    (r"py:class", r"ProgressSetting"),
    (r"py:.*", r"aurora_swarm\._.*"),
    (r"py:class", r"(P|T|_K|ResponseT)"),
    (r"py:class", r"(ExceptionGroup|BaseExceptionGroup)"),
    (r"py:class", r"Tags"),
    (r"py:class", r"OnChange"),  # a Literal alias; run_job documents its values
    (r"py:class", r"(EndpointLike|ChatTemplateSetting|_Unset|ResultHook|Prompt|Conversation|Message|Format)"),
    (r"py:class", r"TLSVerify"),
    # EndpointBehavior's fields are documented as parameters, not attributes.
    # The standard library: its inventory is not fetched (builds run offline).
    (r"py:.*", r"(collections\.abc|os|pathlib|asyncio|typing|types|datetime|json|ssl)\..*"),
    # Plain-language types in NumPy-style docstrings ("sequence of str", "mapping of int to X").
    (r"py:class", r"(sequence|mapping|callable|iterable|optional|default.*|.* to .*|of)"),
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False

intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

html_theme = "furo"
html_title = f"aurora_swarm {release}"
exclude_patterns = ["_build", "_generated", "_ext"]
html_static_path = ["_static"]
html_css_files = ["custom.css"]
pygments_style = "sphinx"
pygments_dark_style = "monokai"
