"""What each endpoint can do, learnt from the requests a pool sends anyway.

Not every OpenAI-compatible server is vLLM. Ollama and llama-cpp-python take one string prompt
per ``/v1/completions`` request and refuse a list; many servers have no ``/health``; few list
``max_model_len`` in ``/v1/models``. A pool learns each endpoint's answers once and keeps them in
one :class:`Detected` per endpoint, shared by every call and sub-pool; :class:`Capabilities` is
the read-only snapshot users see through
:meth:`VLLMPool.capabilities <aurora_swarm.VLLMPool.capabilities>` and
:meth:`VLLMPool.stats <aurora_swarm.VLLMPool.stats>`.

Detection costs no request on a vLLM server beyond the ones sent anyway: the first batched
request of two or more prompts that is answered shows that the endpoint takes lists. Only a
refusal of a list (HTTP 400, 404, 405 or 422) while that is not known yet costs more requests:
the list's first prompt alone, as a string, then as a list of one. If the server answers the
string and refuses the list of one, lists are what it refused, and the endpoint gets one prompt
a request from then on. If it refuses the string, the prompts are at fault; if it answers the
list of one, the refusal had another cause; either way the refusal stands.

:class:`~aurora_swarm.EmbeddingPool` learns the same of ``/v1/embeddings`` (in its own
:class:`Detected` per endpoint): a list input refused as above, or answered with fewer vectors
than texts, marks an endpoint as embedding one text a request.
"""

from __future__ import annotations

import anyio
import attrs

__all__ = ["NOT_SUPPORTED_STATUSES", "Capabilities", "Detected"]

NOT_SUPPORTED_STATUSES = frozenset({400, 404, 405, 422})
"""Statuses with which servers refuse a request shape they do not support."""


@attrs.frozen
class Capabilities:
    """What one endpoint has shown it can do; ``None`` where it has not been seen yet.

    .. versionadded:: 0.1.0

    Attributes
    ----------
    list_prompts:
        Takes a list of prompts in one ``/v1/completions`` request (vLLM, SGLang). When false
        the pool sends its prompts one a request, ``fallback_concurrency`` at once. For an
        :class:`~aurora_swarm.EmbeddingPool`: embeds a list ``input`` of texts in one
        ``/v1/embeddings`` request.
    health_route:
        Answers ``GET /health``. When false, health probes ask ``GET /v1/models`` instead.
    chat_batch:
        Serves ``/v1/chat/completions/batch`` (asked only by ``chat_template="server"`` or
        ``"auto"``).
    metrics:
        Publishes vLLM's load gauges in ``/metrics`` (read by dispatch to learn the server's
        sequence slots). When false, dispatch stops asking.
    """

    list_prompts: bool | None = None
    health_route: bool | None = None
    chat_batch: bool | None = None
    metrics: bool | None = None


@attrs.define(eq=False)
class Detected:
    """The live, learnt capabilities of one endpoint (internal; see :class:`Capabilities`).

    ``limiter`` bounds the one-prompt requests in flight to the endpoint when it does not take
    lists, over all calls and sub-pools.
    """

    limiter: anyio.CapacityLimiter
    list_prompts: bool | None = None
    health_route: bool | None = None

    def snapshot(
        self, chat_batch: bool | None = None, metrics: bool | None = None
    ) -> Capabilities:
        """The read-only view of what is known now (with what others learnt of the endpoint)."""
        return Capabilities(self.list_prompts, self.health_route, chat_batch, metrics)
