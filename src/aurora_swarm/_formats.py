"""How batched prompts are formatted for the server: raw text, a client-side chat template, or
the server's batch chat route.

``/v1/completions`` sends raw text, but an instruction-tuned model expects its chat template
around the text. Three ways keep a whole chunk in ONE request and still give chat models chat
formatting:

``None`` (raw)
    prompts go out as they are (strings only).
a template (``ChatTemplate``, template text, a ``.jinja`` file or a model directory)
    the model's own template is rendered in the client, in a Jinja2 sandbox, and the text goes
    to ``/v1/completions``; text that already starts with the BOS token is sent with vLLM's
    ``add_special_tokens: false`` so the server adds no second BOS.
``"server"``
    a list of conversations in one ``/v1/chat/completions/batch`` request (recent vLLM).
``"auto"``
    ``"server"`` when every endpoint offers the batch chat route, else the template found in the
    model directory the server reports as ``root`` in ``/v1/models`` when that path is readable
    here, else a :class:`~aurora_swarm.ConfigurationError` saying what to pass.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TypeAlias

import anyio
import attrs

from ._chat_template import ChatTemplate
from ._endpoint import Endpoint
from ._exceptions import ConfigurationError
from ._prompts import Conversation, Prompt, as_conversation, sizing_text, template_tokens
from ._sizing import ContextSizer
from ._transport import Transport

_log = logging.getLogger("aurora_swarm.formats")

__all__ = ["ChatTemplateSetting", "FormatResolver", "Prepared", "PromptFormat"]

ChatTemplateSetting: TypeAlias = "ChatTemplate | str | os.PathLike[str] | None"
"""What ``chat_template=`` accepts: ``None``, ``"auto"``, ``"server"``, a
:class:`~aurora_swarm.ChatTemplate`, template text, a ``.jinja`` file or a model directory."""

Kind = Literal["raw", "template", "server"]


@attrs.frozen
class Prepared:
    """Prompts made ready for the wire."""

    payloads: Sequence[str] | Sequence[Conversation]
    sizing: Sequence[str]
    add_special_tokens: Sequence[bool | None]
    template_tokens: Sequence[int] | None = None  # what the server's chat template adds


@attrs.frozen
class PromptFormat:
    """A resolved way of formatting batched prompts."""

    kind: Kind
    template: ChatTemplate | None = None

    @property
    def conversations(self) -> bool:
        """Whether prompts may be conversations."""
        return self.kind != "raw"

    def prepare(self, prompts: Sequence[Prompt], system_prompt: str | None) -> Prepared:
        """Render, or wrap, every prompt; raises ``PromptError`` naming a bad prompt's index."""
        if self.kind == "template":
            assert self.template is not None
            texts = self.template.render_many(prompts, system_prompt=system_prompt)
            # BOS already in the text: the server must not add another one.
            special = [False if self.template.starts_with_bos(t) else None for t in texts]
            return Prepared(texts, texts, special)
        if self.kind == "server":
            conversations = [as_conversation(p, system_prompt) for p in prompts]
            return Prepared(conversations, [sizing_text(c) for c in conversations],
                            [None] * len(prompts), [template_tokens(c) for c in conversations])
        if system_prompt is not None:
            raise ConfigurationError(
                "system_prompt needs a chat template: raw prompts have no place for it "
                "(pass chat_template=...)")
        texts = [p for p in prompts if isinstance(p, str)]
        return Prepared(texts, texts, [None] * len(texts))


RAW = PromptFormat("raw")


def _template_from(setting: str | os.PathLike[str]) -> ChatTemplate:
    text = os.fspath(setting)
    if "{{" in text or "{%" in text:
        return ChatTemplate(text, name="chat_template")
    path = Path(text)
    if path.is_dir():
        return ChatTemplate.from_model_dir(path)
    if path.is_file():
        if path.suffix == ".json":
            return ChatTemplate.from_tokenizer_config(path)
        return ChatTemplate.from_file(path)
    raise ConfigurationError(
        f"chat_template={text!r} is not 'auto', 'server', template text, or an existing "
        "file or model directory")


def _template_in(root: str | None) -> ChatTemplate:
    """The chat template in the model directory a server reports, if readable here."""
    if root is None or not Path(root).is_dir():
        where = f" (the servers report root {root!r}, not readable here)" if root else ""
        raise ConfigurationError(
            "chat_template='auto' found no way to format conversations: the servers do not "
            f"offer /v1/chat/completions/batch and no model directory is readable{where}; "
            "pass chat_template=<model directory, .jinja file or template text>")
    return ChatTemplate.from_model_dir(root)


class FormatResolver:
    """Turns a ``chat_template=`` setting into a :class:`PromptFormat`; caches what it learns."""

    def __init__(self, transport: Transport, sizer: ContextSizer) -> None:
        self._transport = transport
        self._sizer = sizer
        self._chat_batch: dict[Endpoint, bool] = {}
        self._auto: PromptFormat | None = None
        self._said_server = False
        self._lock = anyio.Lock()

    @staticmethod
    def check(setting: ChatTemplateSetting) -> PromptFormat | None:
        """Resolve what needs no server; ``None`` for ``"auto"`` and ``"server"``."""
        if setting is None:
            return RAW
        if isinstance(setting, ChatTemplate):
            return PromptFormat("template", setting)
        if setting in ("auto", "server"):
            return None
        if isinstance(setting, str | os.PathLike):
            return PromptFormat("template", _template_from(setting))
        raise ConfigurationError(
            f"chat_template must be None, 'auto', 'server', a ChatTemplate, template text or a "
            f"path; got {type(setting).__name__}")

    async def resolve(
        self, setting: ChatTemplateSetting, endpoints: Sequence[Endpoint]
    ) -> PromptFormat:
        """The format for a call over ``endpoints``."""
        known = self.check(setting)
        if known is not None:
            return known
        if setting == "server":
            missing = [e for e, ok in zip(endpoints, await self._support(endpoints),
                                          strict=True) if not ok]
            if missing:
                raise ConfigurationError(
                    f"{len(missing)} endpoint(s), e.g. {missing[0]}, do not offer "
                    "/v1/chat/completions/batch (vLLM added it recently); pass the model's "
                    "chat template instead (chat_template=<model directory or .jinja file>)")
            return PromptFormat("server")
        return await self._auto_format(endpoints)

    async def _auto_format(self, endpoints: Sequence[Endpoint]) -> PromptFormat:
        support = await self._support(endpoints)
        if all(support):
            if not self._said_server:
                self._said_server = True
                _log.info("chat_template='auto': all %d endpoints offer "
                          "/v1/chat/completions/batch; using it", len(endpoints))
            return PromptFormat("server")
        async with self._lock:
            if self._auto is None:
                info = await self._sizer.info(endpoints)
                root = info.root if info is not None else None
                template = await anyio.to_thread.run_sync(_template_in, root)
                self._auto = PromptFormat("template", template)
                _log.info("chat_template='auto': %d of %d endpoints lack "
                          "/v1/chat/completions/batch; falling back to the chat template in "
                          "the model directory %s, rendered here", support.count(False),
                          len(endpoints), root)
            return self._auto

    def chat_batch_known(self, endpoint: Endpoint) -> bool | None:
        """Whether ``endpoint`` offers ``/v1/chat/completions/batch`` (``None``: not asked)."""
        return self._chat_batch.get(endpoint)

    async def _support(self, endpoints: Sequence[Endpoint]) -> list[bool]:
        unknown = [e for e in dict.fromkeys(endpoints) if e not in self._chat_batch]
        if unknown:
            limiter = anyio.CapacityLimiter(64)

            async def probe(endpoint: Endpoint) -> None:
                async with limiter:
                    offers = await self._transport.offers_chat_batch(endpoint)
                    self._chat_batch[endpoint] = offers
                    _log.debug("%s %s /v1/chat/completions/batch", endpoint,
                               "offers" if offers else "does not offer")

            async with anyio.create_task_group() as group:
                for endpoint in unknown:
                    group.start_soon(probe, endpoint)
        return [self._chat_batch[e] for e in endpoints]
