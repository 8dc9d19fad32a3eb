"""vLLM's wire format: reading request bodies and writing response bodies.

Shapes follow vLLM's OpenAI server (``vllm/entrypoints/openai``): errors are
``{"error": {"message", "type", "param", "code"}}``, completions answer one choice per prompt,
``/v1/chat/completions/batch`` takes ``messages`` as a list of conversations and answers one
``chat.completion`` whose choice ``i`` answers conversation ``i``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from ._answers import (
    chat_prompt_tokens,
    expected_answer,
    expected_chat_answer,
    expected_embedding,
    prompt_tokens,
)

__all__ = [
    "Answers",
    "RequestError",
    "answer_chats",
    "answer_prompts",
    "chat_body",
    "check_model",
    "completion_body",
    "conversations_of",
    "embeddings_body",
    "error_body",
    "generate_body",
    "inputs_of",
    "messages_of",
    "models_body",
    "parse_body",
    "prompts_of",
]

_ERROR_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    429: "RateLimitError",
    500: "InternalServerError",
    501: "NotImplementedError",
    503: "ServiceUnavailableError",
}
_DEFAULT_COMPLETION_MAX_TOKENS = 16  # vLLM's CompletionRequest default


class RequestError(Exception):
    """A request the fake server refuses as vLLM would, with its status and error fields."""

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param


def error_body(message: str, status: int, param: str | None = None) -> dict[str, Any]:
    """Return vLLM's error JSON for ``status``."""
    err_type = _ERROR_TYPES.get(status)
    if err_type is None:
        err_type = HTTPStatus(status).phrase.replace(" ", "").replace("-", "") + "Error"
    return {"error": {"message": message, "type": err_type, "param": param, "code": status}}


def parse_body(body: bytes) -> dict[str, Any]:
    """Decode a JSON object body or raise :class:`RequestError`."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise RequestError(f"JSON decode error: {exc}") from None
    if not isinstance(doc, dict):
        raise RequestError("the request body must be a JSON object")
    return doc


def check_model(doc: Mapping[str, Any], served: str) -> None:
    """Refuse a request for another model with vLLM's 404."""
    model = doc.get("model")
    if model is not None and model != served:
        raise RequestError(f"The model `{model}` does not exist.", 404, "model")


def prompts_of(doc: Mapping[str, Any]) -> list[str]:
    """Return the prompts of a completion request: a string or a list of strings."""
    prompt = doc.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, (int, list)) for p in prompt):
        raise RequestError(
            "this fake vLLM server takes prompts as text only, not as token ids", param="prompt"
        )
    raise RequestError("prompt must be a string or a non-empty list of strings", param="prompt")


def messages_of(value: Any, param: str = "messages") -> list[dict[str, Any]]:
    """Check one conversation: a non-empty list of messages with a role and text content."""
    if not isinstance(value, list) or not value:
        raise RequestError(f"{param} must be a non-empty list of messages", param=param)
    for message in value:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(f"each message of {param} needs a role", param=param)
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise RequestError(f"message content in {param} must be text", param=param)
    return value


def conversations_of(doc: Mapping[str, Any]) -> list[list[dict[str, Any]]]:
    """Return the conversations of a ``/v1/chat/completions/batch`` request."""
    convs = doc.get("messages")
    if not isinstance(convs, list) or not convs or not all(isinstance(c, list) for c in convs):
        raise RequestError(
            "messages must be a non-empty list of conversations (lists of messages)",
            param="messages",
        )
    return [messages_of(c, f"messages[{i}]") for i, c in enumerate(convs)]


class Answers:
    """The work of one request: per prompt its token counts, text and finish reason."""

    __slots__ = ("completion_tokens", "finish_reasons", "prompt_tokens", "texts")

    def __init__(self) -> None:
        self.prompt_tokens: list[int] = []
        self.completion_tokens: list[int] = []
        self.texts: list[str] = []
        self.finish_reasons: list[str] = []

    def usage(self) -> dict[str, Any]:
        """Return the ``usage`` object, summed over the request."""
        p, c = sum(self.prompt_tokens), sum(self.completion_tokens)
        return {
            "prompt_tokens": p,
            "total_tokens": p + c,
            "completion_tokens": c,
            "prompt_tokens_details": None,
        }


def answer_prompts(doc: Mapping[str, Any], prompts: Sequence[str], max_model_len: int) -> Answers:
    """Answer the prompts of a completion request (``max_tokens`` defaults to 16)."""
    _refuse_unsupported(doc)
    max_tokens = _max_tokens(doc, "max_tokens", _DEFAULT_COMPLETION_MAX_TOKENS)
    special = doc.get("add_special_tokens")
    add_special = True if special is None else bool(special)
    out = Answers()
    for prompt in prompts:
        n = prompt_tokens(prompt, add_special)
        limit = _check_length(n, max_tokens, max_model_len)
        text, finish = expected_answer(prompt, limit)
        _add(out, n, text, finish, limit)
    return out


def answer_chats(
    doc: Mapping[str, Any], conversations: Sequence[list[dict[str, Any]]], max_model_len: int
) -> Answers:
    """Answer conversations (``max_completion_tokens`` wins over ``max_tokens``; no default)."""
    _refuse_unsupported(doc)
    key = "max_completion_tokens" if doc.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _max_tokens(doc, key, None)
    add_special = bool(doc.get("add_special_tokens") or False)
    out = Answers()
    for messages in conversations:
        n = chat_prompt_tokens(messages, add_special)
        limit = _check_length(n, max_tokens, max_model_len)
        text, finish = expected_chat_answer(messages, limit)
        _add(out, n, text, finish, limit)
    return out


def completion_body(model: str, answers: Answers, order: Sequence[int]) -> dict[str, Any]:
    """Return a ``text_completion`` body with the choices of ``answers`` listed in ``order``."""
    texts, finishes = answers.texts, answers.finish_reasons
    choices = [
        {
            "index": i,
            "text": texts[i],
            "logprobs": None,
            "finish_reason": finishes[i],
            "stop_reason": None,
        }
        for i in order
    ]
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": answers.usage(),
    }


def chat_body(model: str, answers: Answers, order: Sequence[int]) -> dict[str, Any]:
    """Return a ``chat.completion`` body with the choices of ``answers`` listed in ``order``."""
    texts, finishes = answers.texts, answers.finish_reasons
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": texts[i]},
            "logprobs": None,
            "finish_reason": finishes[i],
            "stop_reason": None,
        }
        for i in order
    ]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": answers.usage(),
    }


def models_body(
    model: str, root: str, max_model_len: int | None, created: int
) -> dict[str, Any]:
    """Return the ``/v1/models`` body of a server that serves one model.

    Without ``max_model_len`` the card has no such field, as on servers that are not vLLM.
    """
    permission = {
        "id": f"modelperm-{uuid.uuid4().hex}",
        "object": "model_permission",
        "created": created,
        "allow_create_engine": False,
        "allow_sampling": True,
        "allow_logprobs": True,
        "allow_search_indices": False,
        "allow_view": True,
        "allow_fine_tuning": False,
        "organization": "*",
        "group": None,
        "is_blocking": False,
    }
    card: dict[str, Any] = {
        "id": model,
        "object": "model",
        "created": created,
        "owned_by": "vllm",
        "root": root,
        "parent": None,
        "max_model_len": max_model_len,
        "permission": [permission],
    }
    if max_model_len is None:
        del card["max_model_len"]
    return {"object": "list", "data": [card]}


def _refuse_unsupported(doc: Mapping[str, Any]) -> None:
    if doc.get("stream"):
        raise RequestError(
            "the fake vLLM server does not stream; send stream=false", param="stream"
        )
    n = doc.get("n")
    if n is not None and n != 1:
        raise RequestError("the fake vLLM server answers n=1 only", param="n")


def _max_tokens(doc: Mapping[str, Any], key: str, default: int | None) -> int | None:
    value = doc.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(f"{key} must be a whole number >= 1, got {value!r}", param=key)
    return value


def _check_length(n: int, max_tokens: int | None, max_model_len: int) -> int:
    """Refuse a prompt that does not fit as vLLM does; return the output token limit."""
    wanted = max_tokens or 0
    if n + wanted > max_model_len:
        least = "at least " if n > max_model_len else ""
        raise RequestError(
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {wanted} output tokens and your prompt contains {least}{n} input tokens, "
            f"for a total of {least}{n + wanted} tokens. Please reduce the length of the input "
            f"prompt or the number of requested output tokens. (parameter=input_tokens, "
            f"value={n})",
            param="input_tokens",
        )
    return max_tokens if max_tokens is not None else max_model_len - n


def _add(out: Answers, n: int, text: str, finish: str, limit: int) -> None:
    out.prompt_tokens.append(n)
    out.completion_tokens.append(min(len(text.split()), limit))
    out.texts.append(text)
    out.finish_reasons.append(finish)


def inputs_of(doc: Mapping[str, Any]) -> list[str]:
    """Return the texts of an embeddings request: ``input`` is a string or a list of them."""
    value = doc.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise RequestError("input must be a string or a non-empty list of strings", param="input")


def answer_inputs(
    doc: Mapping[str, Any], texts: Sequence[str], max_model_len: int
) -> Answers:
    """Read the texts of an embeddings request (vectors are made when the body is written)."""
    out = Answers()
    for text in texts:
        n = prompt_tokens(text, True)
        if n > max_model_len:
            raise RequestError(
                f"This model's maximum context length is {max_model_len} tokens. However, "
                f"your input contains {n} tokens.", param="input")
        _add(out, n, text, "stop", 0)
        out.completion_tokens[-1] = 0
    return out


def embeddings_body(model: str, answers: Answers, order: Sequence[int]) -> dict[str, Any]:
    """Return a ``/v1/embeddings`` body, one vector per input, listed in ``order``."""
    texts = answers.texts
    p = sum(answers.prompt_tokens)
    return {
        "id": f"embd-{uuid.uuid4().hex}",
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": [{"index": i, "object": "embedding", "embedding": expected_embedding(texts[i])}
                 for i in order],
        "usage": {"prompt_tokens": p, "total_tokens": p, "completion_tokens": 0,
                  "prompt_tokens_details": None},
    }


def prompt_of(doc: Mapping[str, Any]) -> list[str]:
    """Return the one prompt of a ``/generate`` request."""
    prompt = doc.get("prompt")
    if not isinstance(prompt, str):
        raise RequestError("prompt must be a string", param="prompt")
    return [prompt]


def answer_generate(
    doc: Mapping[str, Any], prompts: Sequence[str], max_model_len: int
) -> Answers:
    """Answer a ``/generate`` request: no token limit but the context."""
    return answer_prompts({**doc, "max_tokens": None}, prompts, max_model_len)


def generate_body(model: str, answers: Answers, order: Sequence[int]) -> dict[str, Any]:
    """Return a ``/generate`` body: ``{"response": text}``."""
    return {"response": answers.texts[order[0]] if order else ""}
