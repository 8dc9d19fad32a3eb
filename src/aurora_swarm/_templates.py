"""Filling prompt templates: :func:`as_text` and :func:`fill_template` (used by the patterns
and by batch jobs, so they live below both)."""

from __future__ import annotations

import re

from ._response import Response

__all__ = ["as_text", "fill_template"]


def as_text(value: object) -> str:
    """The text a value stands for in a prompt: a string, a response's ``text``, else ``str()``.

    Examples
    --------
    >>> from aurora_swarm import Response
    >>> from aurora_swarm.patterns import as_text
    >>> as_text("x"), as_text(Response(success=True, text="y")), as_text(3)
    ('x', 'y', '3')
    """
    if isinstance(value, str):
        return value
    if isinstance(value, Response):
        return value.text
    return str(value)


def fill_template(template: str, /, **values: object) -> str:
    """Replace each ``{name}`` placeholder of ``template`` with ``values[name]``.

    Plain replacement in one pass, not ``str.format``: other braces (JSON, code, set
    notation) are left as they are, and a value that itself contains ``{name}`` is not filled
    again. Values go through :func:`as_text`.

    Examples
    --------
    >>> from aurora_swarm.patterns import fill_template
    >>> fill_template('Parse {item} as {"json": true}', item='{"a": [1]}')
    'Parse {"a": [1]} as {"json": true}'
    >>> fill_template("{x} and {y}", x="{y}", y="1")
    '{y} and 1'
    """
    if not values:
        return template
    names = "|".join(re.escape(name) for name in values)
    pattern = re.compile(r"\{(" + names + r")\}")
    texts = {name: as_text(value) for name, value in values.items()}
    return pattern.sub(lambda match: texts[match.group(1)], template)
