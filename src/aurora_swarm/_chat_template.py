"""Client-side chat templates: turn a conversation into the exact text a model was tuned on.

Batched requests go to vLLM's ``/v1/completions`` endpoint as raw text, so the chat template
of an instruction-tuned model has to be applied here, in the client.
:class:`~aurora_swarm.ChatTemplate` renders the model's own Jinja2 template the way Hugging
Face transformers' ``apply_chat_template(..., tokenize=False)`` does: the same sandboxed
environment and options, the same helpers (``raise_exception``, ``strftime_now``, the
``tojson`` filter, ``{% generation %}`` blocks, the restricted ``dict`` and ``namespace``),
the same template variables, and the same clean-up of the messages (keys set to ``None``
dropped, values copied to plain JSON types, reasoning aliased as ``thinking`` and
``reasoning_content``).

One difference is deliberate: transformers turns an unsafe attribute access (such as
``''.__class__``) into an undefined value that fails only when it is used; here the access is
refused at once, so a hostile template never renders quietly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

import jinja2
import jinja2.exceptions
import jinja2.ext
import jinja2.nodes
import jinja2.parser
import jinja2.sandbox
import jinja2.utils

from ._exceptions import ConfigurationError, PromptError
from ._prompts import as_conversation, check_prompts

__all__ = ["ChatTemplate"]

_NAMED_TOKENS = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
_SOURCE_FILES = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")


class _Sandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """transformers' sandbox, except that an unsafe attribute access fails at once."""

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        raise jinja2.exceptions.SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe."
        )


class _GenerationBlock(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` marks assistant text; here it renders its body."""

    tags = {"generation"}  # noqa: RUF012 - the type Extension declares

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Callable[[], str]) -> str:
        return caller()


class _TemplateDict:
    """The ``dict`` global: builds dicts without exposing the ``dict`` type itself."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """The ``namespace`` global: refuses underscore-prefixed names."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # no named self: namespace(self=...) works
        self, attrs = args[0], dict(*args[1:], **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)  # Namespace hides its own attributes
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: object) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"namespace attribute {name!r} is refused: names may not start with '_'"
            )


def _raise_exception(message: str) -> NoReturn:
    raise jinja2.TemplateError(message)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes HTML characters; chat templates expect plain json.dumps.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _make_environment() -> _Sandbox:
    env = _Sandbox(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationBlock, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env


_ENVIRONMENT = _make_environment()


def _plain(value: Any) -> Any:
    """Copy ``value`` out of plain JSON types; anything else becomes an inert ``<TypeName>``."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    for kind in (str, bool, int, float):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, Mapping):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    return f"<{type(value).__name__}>"


def _prepare_message(message: Mapping[str, Any]) -> dict[str, Any]:
    plain: dict[str, Any] = _plain({k: v for k, v in message.items() if v is not None})
    reasoning = next((plain[k] for k in _REASONING_FIELDS if plain.get(k) is not None), None)
    if reasoning is not None:
        plain = {"thinking": reasoning, **plain, "reasoning_content": reasoning}
    return plain


def _token(value: Any) -> str:
    """A special token as a string: plain, or the ``content`` of an AddedToken-style dict."""
    if isinstance(value, Mapping):
        value = value.get("content")
    return value if isinstance(value, str) else ""


def _read_object(path: Path) -> Mapping[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{path}: expected a JSON object")
    return data


class ChatTemplate:
    """A model's chat template, compiled once and rendered in a sandbox.

    .. versionadded:: 0.1.0

    Parameters
    ----------
    source:
        The Jinja2 template text, as the model ships it.
    bos_token, eos_token:
        The model's beginning- and end-of-sequence tokens; ``""`` when it has none (the
        template then sees them as undefined, as with transformers).
    name:
        A label for error messages, such as the file the template came from.
    special_tokens:
        Other named special tokens the template may use (``pad_token``, ``unk_token``, ...).

    Raises
    ------
    ~aurora_swarm.ConfigurationError
        If the template has a syntax error; the message names the template and the line.
    """

    __slots__ = ("_bos_token", "_eos_token", "_name", "_source", "_special_tokens", "_template")

    def __init__(
        self,
        source: str,
        *,
        bos_token: str = "",
        eos_token: str = "",
        name: str = "<string>",
        special_tokens: Mapping[str, str] | None = None,
    ) -> None:
        try:
            template = _ENVIRONMENT.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigurationError(
                f"chat template {name}: syntax error on line {exc.lineno}: {exc.message}"
            ) from exc
        self._template = template
        self._source = source
        self._name = name
        self._bos_token = bos_token
        self._eos_token = eos_token
        tokens = {k: v for k, v in (special_tokens or {}).items() if v}
        tokens.update((k, v) for k, v in (("bos_token", bos_token), ("eos_token", eos_token)) if v)
        self._special_tokens: Mapping[str, str] = MappingProxyType(tokens)

    @property
    def source(self) -> str:
        """The template text."""
        return self._source

    @property
    def name(self) -> str:
        """The label used in error messages."""
        return self._name

    @property
    def bos_token(self) -> str:
        """The BOS token, or ``""``."""
        return self._bos_token

    @property
    def eos_token(self) -> str:
        """The EOS token, or ``""``."""
        return self._eos_token

    @property
    def special_tokens(self) -> Mapping[str, str]:
        """Every special token the template sees, by variable name (read-only)."""
        return self._special_tokens

    def __repr__(self) -> str:
        return f"ChatTemplate(name={self._name!r}, bos_token={self._bos_token!r})"

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kwargs: Any) -> ChatTemplate:
        """Read a template from a ``.jinja`` file.

        Keyword arguments (``bos_token``, ``eos_token``, ...) go to
        :class:`~aurora_swarm.ChatTemplate`; ``name`` defaults to the path.
        """
        try:
            source = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"cannot read chat template {path}: {exc}") from exc
        kwargs.setdefault("name", str(path))
        return cls(source, **kwargs)

    @classmethod
    def from_tokenizer_config(
        cls,
        path_or_mapping: str | os.PathLike[str] | Mapping[str, Any],
        template_name: str | None = None,
    ) -> ChatTemplate:
        """Build from a ``tokenizer_config.json`` file or its parsed contents.

        ``chat_template`` is either one template or a list of named templates
        (``[{"name": "default", "template": ...}, {"name": "tool_use", ...}]``), of which
        ``template_name`` (default ``"default"``) is taken.  ``bos_token``, ``eos_token`` and
        the other named special tokens may be strings or AddedToken-style dicts.
        """
        if isinstance(path_or_mapping, Mapping):
            return cls._from_config(path_or_mapping, "tokenizer_config", template_name)
        path = Path(path_or_mapping)
        return cls._from_config(_read_object(path), str(path), template_name)

    @classmethod
    def from_model_dir(
        cls, path: str | os.PathLike[str], template_name: str | None = None
    ) -> ChatTemplate:
        """Find the chat template in a model directory, as transformers does.

        The template comes from ``chat_template.jinja``, else ``chat_template.json``, else the
        ``chat_template`` key of ``tokenizer_config.json``.  Special tokens come from
        ``tokenizer_config.json``, with ``special_tokens_map.json`` filling in missing ones.
        """
        folder = Path(path)
        if not folder.is_dir():
            raise ConfigurationError(f"{folder} is not a directory")
        config: dict[str, Any] = {}
        for file in ("special_tokens_map.json", "tokenizer_config.json"):
            if (folder / file).is_file():
                config.update(
                    (k, v) for k, v in _read_object(folder / file).items() if v is not None
                )
        jinja_file, json_file = folder / _SOURCE_FILES[0], folder / _SOURCE_FILES[1]
        source = str(folder / _SOURCE_FILES[2])
        if jinja_file.is_file():
            try:
                config["chat_template"] = jinja_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigurationError(f"cannot read {jinja_file}: {exc}") from exc
            source = str(jinja_file)
        elif json_file.is_file():
            config["chat_template"] = _read_object(json_file).get("chat_template")
            source = str(json_file)
        if config.get("chat_template") is None:
            raise ConfigurationError(
                f"no chat template in {folder}: looked for chat_template.jinja, "
                "chat_template.json and the chat_template key of tokenizer_config.json"
            )
        return cls._from_config(config, source, template_name)

    @classmethod
    def _from_config(
        cls, config: Mapping[str, Any], source: str, template_name: str | None
    ) -> ChatTemplate:
        raw = config.get("chat_template")
        name = source
        if isinstance(raw, list):
            named = {t.get("name"): t.get("template") for t in raw if isinstance(t, Mapping)}
            wanted = template_name or "default"
            if not isinstance(named.get(wanted), str):
                raise ConfigurationError(
                    f"{source}: no chat template named {wanted!r} (has {sorted(map(str, named))})"
                )
            raw, name = named[wanted], f"{source}[{wanted}]"
        elif template_name not in (None, "default"):
            raise ConfigurationError(f"{source}: one chat template, none named {template_name!r}")
        if not isinstance(raw, str):
            raise ConfigurationError(f"{source}: no chat_template string")
        others = {key: _token(config.get(key)) for key in _NAMED_TOKENS}
        return cls(
            raw,
            bos_token=_token(config.get("bos_token")),
            eos_token=_token(config.get("eos_token")),
            name=name,
            special_tokens=others,
        )

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        prompt_index: int | None = None,
        **extra: Any,
    ) -> str:
        """Render one conversation to text.

        Parameters
        ----------
        messages:
            The conversation: ``{"role": ..., "content": ...}`` dicts, oldest first.
        add_generation_prompt:
            End with the header that asks the model for the assistant's reply.
        prompt_index:
            The prompt's index in a batch, carried by any :class:`~aurora_swarm.PromptError`.
        **extra:
            More template variables (``tools``, ``documents``, ``date_string``, ...).

        Raises
        ------
        ~aurora_swarm.PromptError
            If the template refuses the conversation (``raise_exception``), fails, or tries
            unsafe access.
        """
        if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
            raise PromptError(prompt_index, "expected a non-empty list of message dicts")
        if not all(isinstance(m, Mapping) for m in messages):
            raise PromptError(prompt_index, "every message must be a dict")
        variables = _plain({**self._special_tokens, **extra})
        tools, documents = variables.pop("tools", None), variables.pop("documents", None)
        try:
            return self._template.render(
                messages=[_prepare_message(m) for m in messages],
                tools=tools,
                documents=documents,
                add_generation_prompt=add_generation_prompt,
                **variables,
            )
        except jinja2.exceptions.SecurityError as exc:
            problem = f"chat template {self._name}: the template tried unsafe access: {exc}"
            raise PromptError(prompt_index, problem) from exc
        except (jinja2.TemplateError, ArithmeticError, LookupError, TypeError, ValueError) as exc:
            raise PromptError(prompt_index, f"chat template {self._name}: {exc}") from exc

    def render_many(
        self,
        prompts: Sequence[str | Sequence[Mapping[str, Any]]],
        *,
        system_prompt: str | None = None,
        add_generation_prompt: bool = True,
    ) -> list[str]:
        """Render a batch: each prompt is a string (one user message) or a conversation.

        ``system_prompt``, when given, is put first in every conversation that has no system
        message.  A malformed prompt raises :class:`~aurora_swarm.PromptError` naming its index.
        """
        check_prompts(prompts, conversations=True)
        return [
            self.render(
                as_conversation(prompt, system_prompt),
                add_generation_prompt=add_generation_prompt,
                prompt_index=index,
            )
            for index, prompt in enumerate(prompts)
        ]

    def starts_with_bos(self, text: str) -> bool:
        """Whether ``text`` starts with the BOS token.

        When it does, send the prompt with ``add_special_tokens: false`` so that the server
        does not add a second BOS.
        """
        return bool(self._bos_token) and text.startswith(self._bos_token)
