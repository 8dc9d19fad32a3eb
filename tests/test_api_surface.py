"""The public API: the exact export list, a docstring for every public name, every public
name in the API reference, and every code example in a docstring run."""

from __future__ import annotations

import ast
import doctest
import importlib
import inspect
import itertools
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest

import aurora_swarm

DOCS = Path(__file__).resolve().parents[1] / "docs"

EXPECTED_ALL = [
    "POOL_DEFAULT",
    "AgentEndpoint",
    "AgentPool",
    "BadResponseError",
    "BatchError",
    "BatcherStats",
    "Capabilities",
    "ChatTemplate",
    "Chunking",
    "ConfigurationError",
    "ConnectError",
    "Conversation",
    "EmbeddingPool",
    "EmbeddingResponse",
    "Endpoint",
    "EndpointStats",
    "EndpointUnavailable",
    "HTTPStatusError",
    "HealthPolicy",
    "HostfileError",
    "InputFileError",
    "JobFileError",
    "Message",
    "MicroBatcher",
    "ModelInfo",
    "OverloadError",
    "PoolClosedError",
    "PoolDefault",
    "PoolStats",
    "Prompt",
    "PromptError",
    "RequestError",
    "RequestTimeout",
    "Response",
    "RetryPolicy",
    "SwarmError",
    "Tags",
    "Timeouts",
    "Usage",
    "VLLMPool",
    "__version__",
    "parse_hostfile",
]

# The public modules whose every export must be documented.
PUBLIC_MODULES = ["aurora_swarm", "aurora_swarm.patterns", "aurora_swarm.testing",
                  "aurora_swarm.jobs", "aurora_swarm.uq", "aurora_swarm.tables"]


def test_all_is_pinned() -> None:
    assert aurora_swarm.__all__ == EXPECTED_ALL  # a change here is an API change: CHANGELOG


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_all_names_exist(module: str) -> None:
    mod = importlib.import_module(module)
    assert len(set(mod.__all__)) == len(mod.__all__), "a name is exported twice"
    assert [n for n in mod.__all__ if not hasattr(mod, n)] == []


def attribute_docstrings() -> dict[str, list[tuple[object, str]]]:
    """Module-level ``NAME = value`` followed by a string literal, in every module: the
    attribute docstrings Sphinx shows for constants and type aliases."""
    found: dict[str, list[tuple[object, str]]] = {}
    for info in pkgutil.walk_packages(aurora_swarm.__path__, "aurora_swarm."):
        _collect(importlib.import_module(info.name), found)
    _collect(aurora_swarm, found)
    return found


def _collect(module: ModuleType, found: dict[str, list[tuple[object, str]]]) -> None:
    source = inspect.getsource(module)
    body = ast.parse(source).body
    for node, after in itertools.pairwise(body):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        elif isinstance(node, ast.AnnAssign):
            target = node.target
        else:
            continue
        if (isinstance(target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)
                and hasattr(module, target.id)):
            found.setdefault(target.id, []).append((getattr(module, target.id),
                                                    after.value.value))


ATTRIBUTE_DOCS = attribute_docstrings()


def docstring(module: ModuleType, name: str) -> str | None:
    value = getattr(module, name)
    if inspect.isclass(value) or inspect.isfunction(value) or inspect.ismethod(value):
        own = value.__dict__.get("__doc__") if inspect.isclass(value) else value.__doc__
        return own.strip() if isinstance(own, str) and own.strip() else None
    for candidate, text in ATTRIBUTE_DOCS.get(name, []):
        if candidate is value:
            return text
    return None


def public_names() -> list[tuple[str, str]]:
    return [(m, n) for m in PUBLIC_MODULES for n in importlib.import_module(m).__all__]


# __version__ is a plain string; the others need a word on what they are.
UNDOCUMENTED_OK = {("aurora_swarm", "__version__")}


@pytest.mark.parametrize(("module", "name"), public_names(), ids=lambda x: x)
def test_public_name_has_a_docstring(module: str, name: str) -> None:
    if (module, name) in UNDOCUMENTED_OK:
        pytest.skip("a version string")
    assert docstring(importlib.import_module(module), name), f"{module}.{name} has no docstring"


def documented_names() -> set[str]:
    """Every object an autodoc directive in docs/ documents, by full name."""
    names: set[str] = set()
    for path in DOCS.rglob("*.rst"):
        if {"_build", "_generated"} & set(path.relative_to(DOCS).parts):
            continue
        names.update(re.findall(r"^\s*\.\. auto\w+::\s*(\S+)", path.read_text(), re.MULTILINE))
    return names


@pytest.mark.parametrize(("module", "name"), public_names(), ids=lambda x: x)
def test_public_name_in_the_api_reference(module: str, name: str) -> None:
    assert f"{module}.{name}" in documented_names(), (
        f"{module}.{name} is exported but no autodoc directive in docs/ documents it")


# The package and every module in it, private ones too: public names are defined in private
# modules, and the API reference renders their docstrings.
ALL_MODULES = ["aurora_swarm", *(info.name for info in
                                 pkgutil.walk_packages(aurora_swarm.__path__, "aurora_swarm."))]
SRC = Path(aurora_swarm.__file__).resolve().parent

# A line that starts a doctest example: ``>>>`` then a space or the end of the line.
EXAMPLE = re.compile(r"^[ \t]*>>>(?: |$)", re.MULTILINE)


def modules_with_examples() -> list[str]:
    return [n for n in ALL_MODULES
            if EXAMPLE.search(inspect.getsource(importlib.import_module(n)))]


def examples_of(mod: ModuleType) -> list[doctest.DocTest]:
    """The doctests of a module's docstring and of what its source defines.

    Exported classes and functions report the public package as their ``__module__``, so
    :class:`doctest.DocTestFinder` no longer ties them to the private module that defines
    them: they are looked up by the names the module's source defines instead.
    """
    finder = doctest.DocTestFinder()
    own = {node.name for node in ast.parse(inspect.getsource(mod)).body
           if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)}
    prefix = mod.__name__ + "."
    tests = [t for t in finder.find(mod) if t.name == mod.__name__
             or t.name.removeprefix(prefix).split(".")[0] in own]
    for name in sorted(own):
        obj = getattr(mod, name, None)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ != mod.__name__:
            tests += finder.find(obj, prefix + name, module=False, globs=dict(vars(mod)))
    return tests


@pytest.mark.parametrize("module", modules_with_examples())
def test_docstring_examples_run(module: str) -> None:
    """The ``>>>`` examples the API reference shows are run, and print what they show.

    Each module's examples are collected by :class:`doctest.DocTestFinder` (its docstring and
    those of the classes, functions and methods defined in it) and must number as many as the
    ``>>>`` lines of its source: an example where doctest does not look (an attribute
    docstring, a nested function) would otherwise be shown in the docs and never run.
    """
    mod = importlib.import_module(module)
    tests = examples_of(mod)
    written = len(EXAMPLE.findall(inspect.getsource(mod)))
    collected = sum(len(test.examples) for test in tests)
    assert collected == written, (
        f"{module} has {written} `>>>` lines but doctest collects {collected} examples")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


# ``.. code-block:: LANG`` (or ``code``, ``sourcecode``) a docstring may hold without running
# it: text that is not Python (a hostfile, a shell session, JSON).
NOT_PYTHON = {"text", "none", "console", "shell", "bash", "sh", "json", "yaml", "toml", "ini"}
CODE_DIRECTIVE = re.compile(r"^[ \t]*\.\. (?:code-block|code|sourcecode)::[ \t]*(\S*)",
                            re.MULTILINE)


def bare_strings(path: Path) -> list[tuple[int, str]]:
    """The string statements of a source file (module, class, function and attribute
    docstrings) with the line each starts on."""
    return [(node.lineno, node.value.value) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)]


def unrun_code(path: Path) -> list[str]:
    """Where a docstring shows code that nothing runs: a skipped example, a code block in
    Python (or with no language, which Sphinx highlights as Python), or a ``::`` literal block
    (highlighted as Python too)."""
    text = path.read_text()
    found = [f"{path.name}:{text.count(chr(10), 0, m.start()) + 1}: `{m.group().strip()}`"
             for m in re.finditer(r"\+SKIP\b", text)]
    found += [f"{path.name}:{text.count(chr(10), 0, m.start()) + 1}: `{m.group().strip()}`"
              for m in CODE_DIRECTIVE.finditer(text) if m.group(1).lower() not in NOT_PYTHON]
    for start, doc in bare_strings(path):
        for offset, line in enumerate(doc.splitlines()):
            if line.rstrip().endswith("::") and not line.lstrip().startswith(".. "):
                found.append(f"{path.name}:{start + offset}: a `::` literal block")
    return found


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_unrun_code_in_docstrings(path: Path) -> None:
    """Every code block in the docs runs in CI or is generated, and docstrings are rendered in
    the API reference: a Python example in one is a ``>>>`` doctest (run above), not a
    ``code-block:: python``, a ``::`` literal block or a ``+SKIP`` example. Text that is not
    Python (a hostfile, a shell command) goes in a ``code-block`` naming its language."""
    assert unrun_code(path) == []


VERSION_ADDED = re.compile(r"\.\. version(?:added|changed):: (\S+)")


@pytest.mark.parametrize("module", ALL_MODULES)
def test_versionadded_is_never_later_than_the_package(module: str) -> None:
    """Nothing is marked as added in a version after the one this is (unreleased work carries
    the coming release's number, which is the package's until it is released)."""
    version = tuple(int(p) for p in aurora_swarm.__version__.split(".")[:3])
    source = inspect.getsource(importlib.import_module(module))
    for marked in VERSION_ADDED.findall(source):
        parts = tuple(int(p) for p in marked.split("."))
        assert parts <= version, f"{module}: versionadded {marked} > {aurora_swarm.__version__}"


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_exports_name_their_public_module(module: str) -> None:
    """Reprs and tracebacks show ``aurora_swarm.VLLMPool``, not the private module."""
    mod = importlib.import_module(module)
    private = [name for name in mod.__all__
               if (inspect.isclass(getattr(mod, name)) or inspect.isfunction(getattr(mod, name)))
               and "._" in "." + getattr(mod, name).__module__.removeprefix("aurora_swarm")]
    assert private == []
    assert repr(aurora_swarm.VLLMPool) == "<class 'aurora_swarm.VLLMPool'>"


def test_a_public_error_pickles_by_its_public_name() -> None:
    import pickle

    error = aurora_swarm.RequestTimeout("no answer")
    assert b"aurora_swarm._" not in pickle.dumps(error)
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is aurora_swarm.RequestTimeout and str(again) == "no answer"


def test_batch_error_is_a_swarm_error_and_an_exception_group() -> None:
    members = [aurora_swarm.RequestTimeout("slow"), aurora_swarm.ConnectError("gone")]
    error = aurora_swarm.BatchError("2 of 2 prompts failed", members)
    assert isinstance(error, aurora_swarm.SwarmError)
    assert "ExceptionGroup" in [cls.__name__ for cls in type(error).__mro__]
    timeouts = error.subgroup(aurora_swarm.RequestTimeout)
    assert type(timeouts) is aurora_swarm.BatchError and list(timeouts.exceptions) == members[:1]
    with pytest.raises(aurora_swarm.SwarmError) as caught:
        raise error
    assert caught.value is error
