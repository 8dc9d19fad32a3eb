"""What a prompt may be: a string, or a conversation of role/content messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from ._exceptions import PromptError

__all__ = ["Conversation", "Message", "Prompt", "as_conversation", "check_prompts",
           "sizing_text", "template_tokens"]

Message: TypeAlias = Mapping[str, Any]
"""One chat message: ``{"role": "user", "content": "..."}``."""

Conversation: TypeAlias = Sequence[Message]
"""A list of messages, oldest first."""

Prompt: TypeAlias = "str | Conversation"
"""A plain string (one user message) or a conversation."""

# Tokens a chat template may add around each message (role headers, separators).
MESSAGE_OVERHEAD_TOKENS = 16


def is_message(item: object) -> bool:
    """Whether ``item`` is a ``{"role": str, "content": str}`` mapping."""
    return (
        isinstance(item, Mapping)
        and isinstance(item.get("role"), str)
        and isinstance(item.get("content"), str)
    )


def _problem(prompt: object, conversations: bool) -> str | None:
    if isinstance(prompt, str):
        return None
    if not conversations:
        if isinstance(prompt, list | tuple) and prompt and all(map(is_message, prompt)):
            return ("is a conversation, but this pool sends raw text: pass chat_template= "
                    "(a template, a model directory, 'server' or 'auto') to format it")
        return f"must be a str, got {type(prompt).__name__}"
    if isinstance(prompt, list | tuple) and prompt and all(map(is_message, prompt)):
        return None
    return ("must be a str or a non-empty list of {'role': str, 'content': str} messages, "
            f"got {type(prompt).__name__}")


def check_prompts(prompts: Sequence[Prompt], *, conversations: bool) -> Sequence[Prompt]:
    """Validate a prompt list; raise :class:`PromptError` naming the first bad index."""
    if isinstance(prompts, str):
        raise PromptError(None, "prompts must be a list of prompts, not one string")
    if not isinstance(prompts, Sequence):
        prompts = list(prompts)
    for index, prompt in enumerate(prompts):
        if type(prompt) is not str:
            problem = _problem(prompt, conversations)
            if problem is not None:
                raise PromptError(index, problem)
    return prompts


def check_prompt(prompt: object, *, conversations: bool) -> None:
    """Validate one prompt (of a single-prompt call)."""
    problem = _problem(prompt, conversations)
    if problem is not None:
        raise PromptError(None, f"the prompt {problem}")


def as_conversation(prompt: Prompt, system_prompt: str | None = None) -> list[Message]:
    """The prompt as a conversation, with ``system_prompt`` first when it has no system message."""
    if isinstance(prompt, str):
        messages: list[Message] = [{"role": "user", "content": prompt}]
    else:
        messages = list(prompt)
    if system_prompt is not None and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def sizing_text(conversation: Conversation) -> str:
    """The conversation's text, to count; its template adds :func:`template_tokens` more."""
    return "".join(str(m.get("content", "")) for m in conversation)


def template_tokens(conversation: Conversation) -> int:
    """Tokens a chat template may add around the conversation's messages, at most."""
    return MESSAGE_OVERHEAD_TOKENS * len(conversation)
