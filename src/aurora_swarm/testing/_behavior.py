"""Fault injection: what one endpoint does with each request, :class:`EndpointBehavior`."""

from __future__ import annotations

import random
from collections.abc import Iterable

import attrs

__all__ = ["ACTIONS", "TRANSIENT_FAULTS", "ActionPicker", "EndpointBehavior", "is_status_action"]

ACTIONS: frozenset[str] = frozenset(
    {"ok", "shuffle", "hang", "drop", "partial", "dup", "badjson", "die"}
)
"""The named actions. Any HTTP error status written as a string (``"429"``, ``"500"``, ``"503"``,
any of ``"400"`` to ``"599"``) is an action too: that status with a JSON error body."""

TRANSIENT_FAULTS: tuple[str, ...] = ("500", "503", "429", "drop")
"""The faults ``EndpointBehavior.fault_rate`` picks from unless told otherwise: each one
succeeds when retried."""


def is_status_action(action: str) -> bool:
    """Whether ``action`` is an HTTP error status such as ``"503"``."""
    return len(action) == 3 and action.isdigit() and 400 <= int(action) <= 599


def _check_action(action: str) -> None:
    if action not in ACTIONS and not is_status_action(action):
        known = ", ".join(sorted(ACTIONS))
        raise ValueError(f"unknown action {action!r}; expected one of {known} or '400'..'599'")


def _check_actions(_inst: object, _attr: object, actions: tuple[str, ...]) -> None:
    for action in actions:
        _check_action(action)


def _check_one_action(_inst: object, _attr: object, action: str) -> None:
    _check_action(action)


def _to_actions(value: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(str(a) for a in value)


def _check_status(_inst: object, _attr: object, status: int) -> None:
    if not 400 <= status <= 599:
        raise ValueError(f"fail_status must be an HTTP error status 400..599, got {status}")


@attrs.frozen
class EndpointBehavior:
    """How one fake endpoint misbehaves: its speed and the faults it injects.

    Each request to ``/v1/completions``, ``/v1/chat/completions`` or
    ``/v1/chat/completions/batch`` gets one action, by its arrival number ``k`` on the endpoint
    (0 for the first). The first rule that applies wins:

    1. ``die_after`` is set and ``k >= die_after``: ``"die"``;
    2. ``k < len(script)``: ``script[k]``;
    3. ``k < fail_first``: ``str(fail_status)``;
    4. ``rate_limit_every`` is set and ``k + 1`` is a multiple of it: ``"429"``;
    5. a draw from the endpoint's random stream falls below ``fault_rate``: a random choice among
       ``fault_actions``;
    6. ``"shuffle"`` when ``shuffle_choices``, else ``default_action``.

    The actions:

    ``"ok"``
        a correct answer.
    ``"shuffle"``
        a correct answer with its choices in another order (their ``index`` fields are right).
    ``"partial"``
        a correct answer without its last choice.
    ``"dup"``
        a correct answer whose last choice is replaced by a copy of the first (same ``index``);
        a one-choice answer gets a second copy.
    ``"badjson"``
        status 200 with a body that is not JSON.
    ``"hang"``
        no answer, until the client closes the connection or the fleet closes.
    ``"drop"``
        the connection is closed without an answer.
    ``"die"``
        the endpoint stops: its listener and all its connections close and later connects are
        refused, until :meth:`FakeFleet.restart <aurora_swarm.testing.FakeFleet.restart>`.
    ``"400"`` .. ``"599"``
        that HTTP status with a vLLM-style JSON error body; a ``"429"`` also carries a
        ``Retry-After: <retry_after>`` header.

    ``/health``, ``/v1/models`` and ``/tokenize`` are always answered while the endpoint lives,
    unless ``vllm_extras`` is off.

    Three switches make an endpoint look like a server that is not vLLM:

    * ``list_prompts=False``: a ``/v1/completions`` request whose ``prompt`` is a list gets
      ``list_prompt_status`` (400 by default) with an error body, as Ollama and
      llama-cpp-python answer; a string prompt is answered as usual. Refused list requests are
      counted in ``completion_requests`` and ``rejected`` but their prompts are not.
    * ``list_inputs=False``: a ``/v1/embeddings`` request whose ``input`` is a list is answered
      with the first text's vector alone (``index`` 0), as a server that embeds one text a
      request; it counts as one text received and one returned. With ``list_input_status``
      set, the list is refused with that status and an error body instead (counted in
      ``rejected``). A string input is answered as usual.
    * ``vllm_extras=False``: no ``/health``, ``/tokenize``, ``/version`` or ``/metrics`` (404),
      and ``/v1/models`` lists the model without ``max_model_len``.

    Parameters
    ----------
    slowness : float
        Multiplies the service time of each prompt: ``3.0`` is three times slower.
    script : tuple of str
        Actions for the first requests, in arrival order.
    default_action : str
        The action once the script and the other rules are through.
    retry_after : float
        Seconds sent in the ``Retry-After`` header of a 429 answer (fractions allowed).
    shuffle_choices : bool
        Return the choices of every correct answer in another order.
    fail_first : int
        Answer the first ``fail_first`` requests (after the script) with ``fail_status``.
    fail_status : int
        The status of those failures.
    die_after : int or None
        Serve this many requests, then die when the next one arrives.
    rate_limit_every : int
        Answer every ``rate_limit_every``-th request with 429; ``0`` never.
    fault_rate : float
        The probability that a request gets a random fault from ``fault_actions``.
    fault_actions : tuple of str
        The faults ``fault_rate`` picks from; by default ``("500", "503", "429", "drop")``.
    list_prompts : bool
        Take a list of prompts in one ``/v1/completions`` request (vLLM does); when false, only
        a string prompt.
    list_prompt_status : int
        The status a list prompt gets when ``list_prompts`` is false (400, 404, 405 or 422).
    list_inputs : bool
        Embed a list of texts in one ``/v1/embeddings`` request (vLLM does); when false, only
        the first text of a list (or the refusal ``list_input_status`` names).
    list_input_status : int or None
        With ``list_inputs`` false, the status a list input gets instead of a short answer
        (400, 404, 405 or 422); ``None`` (default): the short answer.
    vllm_extras : bool
        Serve vLLM's routes beyond the OpenAI API (``/health``, ``/tokenize``, ``/version``,
        ``/metrics``) and ``max_model_len`` in ``/v1/models``.
    seed : int
        Seeds the endpoint's random stream (together with the endpoint's index), which drives
        ``fault_rate`` and the order of shuffled choices.

    Examples
    --------
    >>> EndpointBehavior(script=("503", "ok", "drop")).script
    ('503', 'ok', 'drop')
    >>> EndpointBehavior(slowness=3.0, die_after=10).die_after
    10
    >>> EndpointBehavior(list_prompts=False, vllm_extras=False).list_prompts  # like Ollama
    False
    >>> EndpointBehavior(list_inputs=False).list_input_status is None  # embeds one text
    True
    """

    slowness: float = attrs.field(default=1.0, converter=float)
    script: tuple[str, ...] = attrs.field(
        default=(), converter=_to_actions, validator=_check_actions
    )
    default_action: str = attrs.field(default="ok", validator=_check_one_action)
    retry_after: float = attrs.field(default=0.05, converter=float)
    shuffle_choices: bool = False
    fail_first: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    fail_status: int = attrs.field(default=503, validator=_check_status)
    die_after: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )
    rate_limit_every: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    fault_rate: float = attrs.field(default=0.0, converter=float)
    fault_actions: tuple[str, ...] = attrs.field(
        default=TRANSIENT_FAULTS, converter=_to_actions, validator=_check_actions
    )
    list_prompts: bool = True
    list_prompt_status: int = attrs.field(default=400, validator=_check_status)
    list_inputs: bool = True
    list_input_status: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_check_status)
    )
    vllm_extras: bool = True
    seed: int = 0

    @slowness.validator
    def _check_slowness(self, _attr: object, value: float) -> None:
        if not value > 0:
            raise ValueError(f"slowness must be > 0, got {value!r}")

    @retry_after.validator
    def _check_retry_after(self, _attr: object, value: float) -> None:
        if not value >= 0:
            raise ValueError(f"retry_after must be >= 0, got {value!r}")

    @fault_rate.validator
    def _check_fault_rate(self, _attr: object, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"fault_rate must be within 0..1, got {value!r}")
        if value > 0 and not self.fault_actions:
            raise ValueError("fault_rate > 0 needs at least one of fault_actions")


class ActionPicker:
    """Hands out the actions of one endpoint's requests in arrival order."""

    __slots__ = ("behavior", "count", "faults_rng", "shuffle_rng")

    def __init__(self, behavior: EndpointBehavior, index: int) -> None:
        self.behavior = behavior
        self.count = 0
        seed = behavior.seed * 1_000_003 + index
        self.faults_rng = random.Random(seed)
        self.shuffle_rng = random.Random(seed + 7_919)

    def next_action(self) -> str:
        """Return the action of the next request, and count it."""
        k = self.count
        self.count = k + 1
        b = self.behavior
        if b.die_after is not None and k >= b.die_after:
            return "die"
        if k < len(b.script):
            return b.script[k]
        if k < b.fail_first:
            return str(b.fail_status)
        if b.rate_limit_every and (k + 1) % b.rate_limit_every == 0:
            return "429"
        if b.fault_rate and self.faults_rng.random() < b.fault_rate:
            return self.faults_rng.choice(b.fault_actions)
        if b.shuffle_choices and b.default_action == "ok":
            return "shuffle"
        return b.default_action
