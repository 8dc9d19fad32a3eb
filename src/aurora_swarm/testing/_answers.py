"""The fake model: deterministic answers and a whitespace "tokenizer".

Every answer is a pure function of its prompt, so a test can check that each output belongs
to its input. "Tokens" are whitespace-separated words: a prompt of ``w`` words counts ``w``
tokens, plus one for a BOS token when special tokens are added. Each word is at least one
byte, so the word count never exceeds the prompt's UTF-8 byte length; with the BOS token the
count is at most ``len(prompt.encode()) + 1``, like a byte-level BPE tokenizer, whose count
never exceeds the byte count plus its special tokens.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "CHAT_TOKENS_PER_MESSAGE",
    "ECHO_PREFIX",
    "chat_prompt_tokens",
    "chat_token_ids",
    "expected_answer",
    "expected_chat_answer",
    "expected_embedding",
    "message_text",
    "prompt_token_ids",
    "prompt_tokens",
]

EMBEDDING_DIMENSIONS = 16
"""Length of the vectors the fake fleet's ``/v1/embeddings`` answers with."""

ECHO_PREFIX = "ECHO: "
"""What every answer starts with, before the echoed prompt."""

CHAT_TOKENS_PER_MESSAGE = 4
"""Tokens a chat message costs on top of its words (its role and template markers)."""

_BOS_ID = 1
_MESSAGE_MARK_ID = 2
_FIRST_WORD_ID = 100
_VOCAB = 32_000


def expected_answer(prompt: str, max_tokens: int | None = None) -> tuple[str, str]:
    """Return the text and finish reason the fake fleet answers ``prompt`` with.

    The answer is ``"ECHO: " + prompt``. Its tokens are its whitespace-separated words; when
    there are more than ``max_tokens`` of them, the answer is cut to the first ``max_tokens``
    words joined by single spaces and the finish reason is ``"length"``, else it is the whole
    answer and the finish reason is ``"stop"``.

    Parameters
    ----------
    prompt : str
        The prompt of a completion, or the content of the last user message of a chat.
    max_tokens : int or None
        The request's ``max_tokens``; ``None`` means no limit.

    Returns
    -------
    tuple of (str, str)
        ``(text, finish_reason)``.

    Examples
    --------
    >>> expected_answer("the sky is blue")
    ('ECHO: the sky is blue', 'stop')
    >>> expected_answer("the sky is blue", max_tokens=3)
    ('ECHO: the sky', 'length')
    """
    text = ECHO_PREFIX + prompt
    if max_tokens is None:
        return text, "stop"
    words = text.split()
    if len(words) > max_tokens:
        return " ".join(words[:max_tokens]), "length"
    return text, "stop"


def expected_chat_answer(
    messages: Sequence[Mapping[str, Any]], max_tokens: int | None = None
) -> tuple[str, str]:
    """Return what the fake fleet answers a chat conversation with.

    The answer to a conversation is :func:`expected_answer` of the content of its last
    ``user`` message (of ``""`` when it has none). A chat request without ``max_tokens`` is
    limited, as in vLLM, by the room its prompt leaves in the context (``max_model_len`` minus
    the prompt tokens), which only matters for answers that long.

    Parameters
    ----------
    messages : Sequence of Mapping
        The conversation, OpenAI style: ``[{"role": "user", "content": "..."}, ...]``.
    max_tokens : int or None
        The request's ``max_tokens``; ``None`` means no limit.

    Returns
    -------
    tuple of (str, str)
        ``(text, finish_reason)``.
    """
    return expected_answer(_last_user_text(messages), max_tokens)


def prompt_tokens(prompt: str, add_special_tokens: bool = True) -> int:
    """Count the tokens of a completion prompt: its words, plus one BOS token.

    Parameters
    ----------
    prompt : str
        The prompt.
    add_special_tokens : bool
        Whether a BOS token is added (vLLM's default for completions).

    Returns
    -------
    int
        The token count the fake server uses for ``usage`` and the context-length check.
    """
    return len(prompt.split()) + (1 if add_special_tokens else 0)


def chat_prompt_tokens(
    messages: Sequence[Mapping[str, Any]], add_special_tokens: bool = False
) -> int:
    """Count the tokens of a chat conversation: all words plus 4 per message.

    Parameters
    ----------
    messages : Sequence of Mapping
        The conversation.
    add_special_tokens : bool
        Whether one more BOS token is added (vLLM's default for chat is not to).

    Returns
    -------
    int
        The token count.
    """
    words = sum(len(message_text(m).split()) for m in messages)
    extra = 1 if add_special_tokens else 0
    return words + CHAT_TOKENS_PER_MESSAGE * len(messages) + extra


def prompt_token_ids(prompt: str, add_special_tokens: bool = True) -> list[int]:
    """Return fake token ids for ``prompt``, one per token :func:`prompt_tokens` counts."""
    ids = [_BOS_ID] if add_special_tokens else []
    ids.extend(_word_id(word) for word in prompt.split())
    return ids


def chat_token_ids(
    messages: Sequence[Mapping[str, Any]], add_special_tokens: bool = False
) -> list[int]:
    """Return fake token ids for a conversation, one per token :func:`chat_prompt_tokens` counts."""
    ids = [_BOS_ID] if add_special_tokens else []
    for message in messages:
        ids.extend([_MESSAGE_MARK_ID] * CHAT_TOKENS_PER_MESSAGE)
        ids.extend(_word_id(word) for word in message_text(message).split())
    return ids


def message_text(message: Mapping[str, Any]) -> str:
    """Return the text of a chat message: its string content, or its text parts joined.

    Content given as a list of parts (``[{"type": "text", "text": "..."}]``) is joined with
    newlines, as vLLM does; parts that are not text are skipped.
    """
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return "\n".join(p for p in parts if isinstance(p, str))
    raise TypeError(f"message content must be a string or a list of parts, not {content!r}")


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return ""


def _word_id(word: str) -> int:
    return _FIRST_WORD_ID + zlib.crc32(word.encode("utf-8")) % _VOCAB


def expected_embedding(text: str) -> list[float]:
    """Return the vector the fake fleet's ``/v1/embeddings`` gives ``text``.

    A unit vector of 16 numbers drawn from a hash of the text: equal
    texts get equal vectors, different texts (almost surely) different ones.

    Examples
    --------
    >>> from aurora_swarm.testing import expected_embedding
    >>> v = expected_embedding("hello")
    >>> len(v), round(sum(x * x for x in v), 6), v == expected_embedding("hello")
    (16, 1.0, True)
    """
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    raw = [(byte - 127.5) / 127.5 for byte in digest[:EMBEDDING_DIMENSIONS]]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]
