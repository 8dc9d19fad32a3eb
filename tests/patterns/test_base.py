"""The Pool protocol, template filling and the small helpers; the export list."""

from __future__ import annotations

import pytest

import aurora_swarm.patterns as patterns
from aurora_swarm import ConfigurationError, Response, SwarmError, VLLMPool
from aurora_swarm.patterns import (
    NoAnswerError,
    Pool,
    SliceablePool,
    TaggedPool,
    as_text,
    fill_template,
    map_gather,
    usable,
)

from .conftest import ScriptedPool


def test_export_list_is_exact() -> None:
    assert sorted(patterns.__all__) == sorted(set(patterns.__all__))
    public = {name for name in dir(patterns) if not name.startswith("_")}
    # The modules scatter_gather, tree_reduce and broadcast are shadowed by their functions.
    modules = {"aggregators", "blackboard", "embedding", "pipeline"}
    assert public - modules == set(patterns.__all__)


def test_contract_import_paths() -> None:
    from aurora_swarm.patterns.scatter_gather import map_gather, scatter_gather
    from aurora_swarm.patterns.tree_reduce import tree_reduce

    assert callable(scatter_gather) and callable(map_gather) and callable(tree_reduce)


@pytest.mark.parametrize(
    ("template", "values", "expected"),
    [
        ("Analyze {item}", {"item": "x"}, "Analyze x"),
        ('{"k": {item}}', {"item": "[1, 2]"}, '{"k": [1, 2]}'),
        ("{item} {other} {{item}}", {"item": "x"}, "x {other} {x}"),
        ("def f(): return {'a': {item}}", {"item": "{1}"}, "def f(): return {'a': {1}}"),
        ("{a}{b}", {"a": "{b}", "b": "B"}, "{b}B"),  # filled once, never again
        ("{item}", {"item": Response(success=True, text="from a response")}, "from a response"),
        ("{n}", {"n": 7}, "7"),
        ("no placeholder", {}, "no placeholder"),
    ],
)
def test_fill_template_is_plain_replacement(
    template: str, values: dict[str, object], expected: str
) -> None:
    assert fill_template(template, **values) == expected


def test_usable_and_as_text() -> None:
    assert usable(Response(success=True, text="x"))
    assert not usable(Response(success=True, text=" \n"))
    assert not usable(Response(success=False, text="x"))
    assert as_text(Response(success=True, text="t")) == "t"
    assert as_text(3.5) == "3.5"


def test_protocols_recognise_vllm_pool_and_a_double() -> None:
    vllm_pool = VLLMPool(["127.0.0.1:9"], model="m")
    assert isinstance(vllm_pool, Pool)
    assert isinstance(vllm_pool, TaggedPool) and isinstance(vllm_pool, SliceablePool)
    double = ScriptedPool()
    assert isinstance(double, Pool)
    assert not isinstance(double, TaggedPool) and not isinstance(double, SliceablePool)


def test_no_answer_error_is_a_swarm_error() -> None:
    assert issubclass(NoAnswerError, SwarmError)


async def test_a_user_pattern_on_a_test_double() -> None:
    """A pattern of the user's own, written against the protocol, tested without a network."""

    async def shout_all(pool: Pool, words: list[str]) -> list[str]:
        answers = await map_gather(pool, words, "shout {item}")
        return [a.text.upper() for a in answers if usable(a)]

    double = ScriptedPool(answer=lambda p: p.removeprefix("shout "))
    assert await shout_all(double, ["hi", "FAIL", "yo"]) == ["HI", "YO"]
    assert double.calls == [(["shout hi", "shout FAIL", "shout yo"], None)]


def test_configuration_errors_are_value_errors() -> None:
    assert issubclass(ConfigurationError, ValueError)
