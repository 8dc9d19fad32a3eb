"""How many tokens a prompt may generate: the model's context minus the prompt, capped.

Counting tokens exactly needs the model's tokenizer, which lives on the server. Most prompts
never need it: a prompt of ``b`` UTF-8 bytes has at most ``b`` tokens plus a few special ones
for the byte-level and byte-fallback tokenizers vLLM serves, so when even that bound leaves
room for the full cap, the cap is the budget. Only prompts near the context limit are counted
exactly, with vLLM's ``/tokenize``.

The pool's ``buffer`` shortens answers so that many tokens of the context stay free after them
(a loop that feeds answers into the next prompt then grows more slowly), but never below what
fits or :data:`BUFFER_FLOOR` tokens: only the context itself refuses a prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from ._endpoint import Endpoint
from ._exceptions import ConfigurationError, PromptError, RequestError
from ._transport import ModelInfo, Transport

__all__ = ["ContextSizer"]

# Room for the special tokens (BOS and the like) a server may add around a prompt.
SPECIAL_TOKENS_MARGIN = 8
# An answer the buffer shortens keeps at least this many tokens (or all the room there is), as
# in the earlier system.
BUFFER_FLOOR = 128
_MAX_TOKENIZE_CONCURRENCY = 16


class ContextSizer:
    """Per-prompt ``max_tokens`` budgets; fetches ``/v1/models`` once and caches it."""

    def __init__(
        self, transport: Transport, model: str, *, context: int | None = None, buffer: int = 0
    ) -> None:
        self._transport = transport
        self._model = model
        self._context = context  # given by the user: wins over what /v1/models says
        self._buffer = buffer  # tokens an answer leaves free after its prompt, when it can
        self._info: ModelInfo | None = None
        self._fetched = False
        self._lock = anyio.Lock()

    async def info(self, endpoints: Sequence[Endpoint]) -> ModelInfo | None:
        """The served model's info, from the first endpoint that answers (``None`` if none)."""
        if self._fetched:
            return self._info
        async with self._lock:
            if self._fetched:
                return self._info
            for endpoint in endpoints[:8]:
                try:
                    models = await self._transport.models(endpoint)
                except RequestError:
                    continue
                for item in models:
                    if item.id == self._model:
                        self._info = item
                        break
                else:
                    served = ", ".join(repr(m.id) for m in models) or "none"
                    raise ConfigurationError(
                        f"{endpoint} does not serve the model {self._model!r}; "
                        f"it serves: {served}"
                    )
                self._fetched = True
                break
            # If no endpoint answered, budgets fall back to the cap and the next call asks again.
            return self._info

    async def budgets(
        self,
        prompts: Sequence[str],
        max_tokens: int | None,
        cap: int,
        endpoints: Sequence[Endpoint],
        template: Sequence[int] | None = None,
    ) -> list[int | PromptError]:
        """One budget per prompt, or a :class:`PromptError` for a prompt that cannot fit.

        ``template[i]`` is how many tokens a chat template may add to prompt ``i`` on the server
        (its text is counted, the template's tokens are added on top).
        """
        if max_tokens is not None:
            return [max_tokens] * len(prompts)
        context = self._context
        if context is None:
            info = await self.info(endpoints)
            context = info.max_model_len if info is not None else None
        if context is None:
            return [cap] * len(prompts)
        room = context - self._buffer - cap - SPECIAL_TOKENS_MARGIN
        budgets: list[int | PromptError] = [cap] * len(prompts)
        extra = template if template is not None else [0] * len(prompts)
        near_limit = [
            index for index, prompt in enumerate(prompts)
            # 4 bytes per character bound the UTF-8 length without encoding most prompts.
            if len(prompt) * 4 + extra[index] > room
            and len(prompt.encode("utf-8")) + extra[index] > room
        ]
        if near_limit:
            await self._count_exactly(prompts, extra, near_limit, budgets, cap, context,
                                      endpoints)
        return budgets

    async def _count_exactly(
        self,
        prompts: Sequence[str],
        extra: Sequence[int],
        indices: list[int],
        budgets: list[int | PromptError],
        cap: int,
        context: int,
        endpoints: Sequence[Endpoint],
    ) -> None:
        limiter = anyio.CapacityLimiter(_MAX_TOKENIZE_CONCURRENCY)

        async def count(index: int) -> None:
            async with limiter:
                tokens = await self._tokens(prompts[index], endpoints)
            if tokens is None:
                tokens = len(prompts[index].encode("utf-8")) + SPECIAL_TOKENS_MARGIN
                how = "at most"
            else:
                how = "exactly" if not extra[index] else "about"
            tokens += extra[index]
            left = context - tokens
            if left < 1:
                budgets[index] = PromptError(
                    index,
                    f"is {how} {tokens} tokens long; the model's context is {context} tokens, "
                    "which leaves no room for an answer (shorten the prompt)",
                )
            else:
                budgets[index] = min(cap, max(left - self._buffer, min(left, BUFFER_FLOOR)))

        async with anyio.create_task_group() as group:
            for index in indices:
                group.start_soon(count, index)

    async def _tokens(self, prompt: str, endpoints: Sequence[Endpoint]) -> int | None:
        for endpoint in endpoints[:3]:
            try:
                return await self._transport.count_tokens(endpoint, self._model, prompt)
            except RequestError:
                continue
        return None
