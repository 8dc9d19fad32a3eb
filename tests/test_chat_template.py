"""Tests for client-side chat template rendering (aurora_swarm._chat_template).

The reference outputs in tests/fixtures/chat_templates/<family>/expected.json were made by
Hugging Face transformers' own apply_chat_template (see make_expected.py there).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aurora_swarm._chat_template import ChatTemplate
from aurora_swarm._exceptions import ConfigurationError, PromptError

FIXTURES = Path(__file__).parent / "fixtures" / "chat_templates"
CONVERSATIONS: list[dict[str, Any]] = json.loads(
    (FIXTURES / "conversations.json").read_text(encoding="utf-8")
)
FAMILIES = sorted(p.parent.name for p in FIXTURES.glob("*/expected.json"))
USER = [{"role": "user", "content": "hi"}]


def _expected(family: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / family / "expected.json").read_text("utf-8"))
    return data


def _write(folder: Path, name: str, content: Any) -> None:
    text = content if isinstance(content, str) else json.dumps(content)
    (folder / name).write_text(text, encoding="utf-8")


class TestReferenceRendering:
    """Byte-identical to transformers for every published family and conversation."""

    def test_fixtures_cover_at_least_five_families(self) -> None:
        assert len(FAMILIES) >= 5
        for family in FAMILIES:
            assert (FIXTURES / family / "SOURCE.txt").is_file()

    @pytest.mark.parametrize("case", CONVERSATIONS, ids=[c["name"] for c in CONVERSATIONS])
    @pytest.mark.parametrize("family", FAMILIES)
    def test_matches_transformers(self, family: str, case: dict[str, Any]) -> None:
        expected = _expected(family)
        want = expected["cases"][case["name"]]
        template = ChatTemplate.from_model_dir(FIXTURES / family)
        render_args = {"add_generation_prompt": case["add_generation_prompt"], "prompt_index": 7}
        if "text" in want:
            got = template.render(case["messages"], **render_args, **expected["template_kwargs"])
            assert got.encode("utf-8") == want["text"].encode("utf-8")
        else:
            with pytest.raises(PromptError) as info:
                template.render(case["messages"], **render_args, **expected["template_kwargs"])
            assert info.value.index == 7
            assert want["message"] in str(info.value)

    def test_template_refusals_are_recorded(self) -> None:
        # Gemma rejects system roles; Gemma and Mistral reject non-alternating turns.
        assert "error" in _expected("gemma2")["cases"]["system_user"]
        assert "error" in _expected("gemma2")["cases"]["non_alternating"]
        assert "error" in _expected("mistral_nemo")["cases"]["non_alternating"]


class TestSandbox:
    """Hostile templates are refused; transformers' helpers behave as there."""

    @pytest.mark.parametrize(
        "source",
        [
            "{{ ''.__class__.__mro__[1].__subclasses__() }}",
            "{{ cycler.__init__.__globals__ }}",
            "{{ self._TemplateReference__context }}",
            "{{ self._TemplateReference__context.cycler.__init__.__globals__.os }}",
            "{{ ''['__class__'] }}",
            "{{ '{0.__class__}'.format(1) }}",
            "{{ messages.append(1) }}",
            "{% set ns = namespace(_hidden=1) %}",
        ],
    )
    def test_unsafe_access_is_refused(self, source: str) -> None:
        template = ChatTemplate(source, name="evil.jinja")
        with pytest.raises(PromptError, match="tried unsafe access") as info:
            template.render(USER, prompt_index=4)
        assert info.value.index == 4
        assert "evil.jinja" in str(info.value)

    def test_huge_range_is_refused(self) -> None:
        with pytest.raises(PromptError, match="MAX_RANGE"):
            ChatTemplate("{% for i in range(10**9) %}{% endfor %}").render(USER)

    def test_raise_exception_becomes_prompt_error(self) -> None:
        template = ChatTemplate("{{ raise_exception('only users here') }}", name="strict")
        with pytest.raises(PromptError) as info:
            template.render(USER, prompt_index=12)
        assert info.value.index == 12
        assert str(info.value) == "prompt 12: chat template strict: only users here"

    def test_undefined_attribute_error_becomes_prompt_error(self) -> None:
        with pytest.raises(PromptError, match="chat template t:"):
            ChatTemplate("{{ messages[3].content.upper() }}", name="t").render(USER)

    def test_syntax_error_names_template_and_line(self) -> None:
        with pytest.raises(ConfigurationError, match=r"broken\.jinja: syntax error on line 2"):
            ChatTemplate("ok\n{% for %}", name="broken.jinja")

    def test_tojson_matches_json_dumps(self) -> None:
        source = "{{ x | tojson }}|{{ x | tojson(indent=2, sort_keys=true) }}"
        value = {"b": "é<&>'", "a": [1, None]}
        got = ChatTemplate(source).render(USER, x=value)
        want = (
            json.dumps(value, ensure_ascii=False)
            + "|"
            + json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)
        )
        assert got == want

    def test_generation_block_renders_its_body(self) -> None:
        source = "{% for m in messages %}{% generation %}[{{ m.content }}]"
        source += "{% endgeneration %}{% endfor %}"
        assert ChatTemplate(source).render(USER) == "[hi]"

    def test_helpers_and_loopcontrols(self) -> None:
        source = (
            "{{ strftime_now('%Y') | length }}"
            "{% for i in [1, 2, 3] %}{% if i == 2 %}{% break %}{% endif %}{{ i }}{% endfor %}"
            "{{ dict(a=1)['a'] }}{% set ns = namespace(n=1) %}{% set ns.n = ns.n + 1 %}{{ ns.n }}"
        )
        assert ChatTemplate(source).render(USER) == "4112"

    def test_trim_blocks_and_lstrip_blocks(self) -> None:
        source = "    {% if true %}\nA\n    {% endif %}\nB"
        assert ChatTemplate(source).render(USER) == "A\nB"


class TestTemplateVariables:
    """The variables a template sees are those transformers passes."""

    def test_special_tokens_and_defaults(self) -> None:
        source = "{{ bos_token }}|{{ eos_token }}|{{ pad_token }}|{{ tools }}"
        source += "|{{ add_generation_prompt }}"
        template = ChatTemplate(
            source, bos_token="<s>", eos_token="</s>", special_tokens={"pad_token": "<pad>"}
        )
        assert template.render(USER) == "<s>|</s>|<pad>|None|True"
        assert template.special_tokens == {
            "pad_token": "<pad>",
            "bos_token": "<s>",
            "eos_token": "</s>",
        }

    def test_missing_bos_is_undefined(self) -> None:
        assert ChatTemplate("{{ bos_token is defined }}").render(USER) == "False"

    def test_extra_variables_reach_template(self) -> None:
        source = "{{ tools | length }} {{ enable_thinking }}"
        got = ChatTemplate(source).render(USER, tools=[{"type": "function"}], enable_thinking=False)
        assert got == "1 False"

    def test_none_keys_dropped_and_reasoning_aliased(self) -> None:
        source = "{{ messages[0].tool_calls is defined }} {{ messages[0].thinking }}"
        message = {"role": "assistant", "content": "x", "tool_calls": None, "reasoning": "hmm"}
        assert ChatTemplate(source).render([message]) == "False hmm"

    def test_rich_objects_become_placeholders(self) -> None:
        got = ChatTemplate("{{ messages[0].content }}").render(
            [{"role": "user", "content": object()}]
        )
        assert got == "<object>"

    @pytest.mark.parametrize("messages", [[], "hello", [1, 2]])
    def test_bad_messages_are_prompt_errors(self, messages: Any) -> None:
        with pytest.raises(PromptError) as info:
            ChatTemplate("x").render(messages, prompt_index=2)
        assert info.value.index == 2


class TestRenderMany:
    """Batches of plain strings and conversations."""

    def test_mixed_input_with_system_prompt(self) -> None:
        template = ChatTemplate.from_model_dir(FIXTURES / "qwen3")
        prompts: list[Any] = [
            "plain question",
            [{"role": "user", "content": "a conversation"}],
            [{"role": "system", "content": "own system"}, {"role": "user", "content": "q"}],
        ]
        got = template.render_many(prompts, system_prompt="Be brief.")
        system = "<|im_start|>system\nBe brief.<|im_end|>\n"
        assert (
            got[0] == system + "<|im_start|>user\nplain question<|im_end|>\n<|im_start|>assistant\n"
        )
        assert (
            got[1] == system + "<|im_start|>user\na conversation<|im_end|>\n<|im_start|>assistant\n"
        )
        assert got[2].startswith("<|im_start|>system\nown system<|im_end|>\n")
        assert "Be brief." not in got[2]
        assert prompts[1] == [{"role": "user", "content": "a conversation"}]  # input left alone

    def test_without_generation_prompt(self) -> None:
        template = ChatTemplate.from_model_dir(FIXTURES / "phi3_5")
        assert template.render_many(["hi"], add_generation_prompt=False) == [
            "<|user|>\nhi<|end|>\n<|endoftext|>"
        ]

    @pytest.mark.parametrize(
        "bad",
        [
            42,
            None,
            [],
            [{"role": "user"}],
            [{"role": "user", "content": 3}],
            ["not a dict"],
            {"role": "user", "content": "a dict, not a list"},
        ],
    )
    def test_bad_item_names_its_index(self, bad: Any) -> None:
        template = ChatTemplate.from_model_dir(FIXTURES / "qwen3")
        with pytest.raises(PromptError) as info:
            template.render_many(["fine", bad])
        assert info.value.index == 1

    def test_template_refusal_names_its_index(self) -> None:
        template = ChatTemplate.from_model_dir(FIXTURES / "gemma2")
        with pytest.raises(PromptError, match="System role not supported") as info:
            template.render_many(["ok", [{"role": "system", "content": "s"}, *USER]])
        assert info.value.index == 1
        assert "gemma2" in str(info.value)


class TestStartsWithBos:
    """Whether the server must be told not to add a second BOS."""

    def test_rendered_bos(self) -> None:
        template = ChatTemplate.from_model_dir(FIXTURES / "llama3")
        assert template.starts_with_bos(template.render(USER))
        assert not template.starts_with_bos("<|start_header_id|>user")

    def test_no_bos_token(self) -> None:
        template = ChatTemplate.from_model_dir(FIXTURES / "qwen3")
        assert template.bos_token == ""
        assert not template.starts_with_bos(template.render(USER))


class TestLoading:
    """from_file, from_tokenizer_config and from_model_dir."""

    def test_from_file(self, tmp_path: Path) -> None:
        _write(tmp_path, "t.jinja", "{{ bos_token }}{{ messages[0].content }}")
        template = ChatTemplate.from_file(tmp_path / "t.jinja", bos_token="<s>")
        assert template.name == str(tmp_path / "t.jinja")
        assert template.render(USER) == "<s>hi"

    def test_from_file_missing(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match="cannot read chat template"):
            ChatTemplate.from_file(tmp_path / "nope.jinja")

    def test_added_token_dicts(self) -> None:
        config = {
            "chat_template": "{{ bos_token }}{{ eos_token }}{{ unk_token }}",
            "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": False},
            "eos_token": {"content": "</s>"},
            "unk_token": "<unk>",
            "pad_token": None,
        }
        template = ChatTemplate.from_tokenizer_config(config)
        assert (template.bos_token, template.eos_token) == ("<s>", "</s>")
        assert template.render(USER) == "<s></s><unk>"
        assert "pad_token" not in template.special_tokens

    def test_named_templates(self, tmp_path: Path) -> None:
        config = {
            "chat_template": [
                {"name": "default", "template": "plain"},
                {"name": "tool_use", "template": "tools"},
            ]
        }
        _write(tmp_path, "tokenizer_config.json", config)
        assert ChatTemplate.from_tokenizer_config(config).render(USER) == "plain"
        chosen = ChatTemplate.from_tokenizer_config(tmp_path / "tokenizer_config.json", "tool_use")
        assert chosen.render(USER) == "tools"
        assert chosen.name.endswith("tokenizer_config.json[tool_use]")
        with pytest.raises(ConfigurationError, match=r"'rag'.*default.*tool_use"):
            ChatTemplate.from_tokenizer_config(config, "rag")

    def test_single_template_has_no_other_names(self) -> None:
        with pytest.raises(ConfigurationError, match="none named 'tool_use'"):
            ChatTemplate.from_tokenizer_config({"chat_template": "x"}, "tool_use")

    @pytest.mark.parametrize("config", [{}, {"chat_template": 3}, {"chat_template": None}])
    def test_config_without_template(self, config: dict[str, Any]) -> None:
        with pytest.raises(ConfigurationError):
            ChatTemplate.from_tokenizer_config(config)

    def test_bad_json(self, tmp_path: Path) -> None:
        _write(tmp_path, "tokenizer_config.json", "{not json")
        with pytest.raises(ConfigurationError, match="cannot read"):
            ChatTemplate.from_tokenizer_config(tmp_path / "tokenizer_config.json")
        _write(tmp_path, "tokenizer_config.json", "[1, 2]")
        with pytest.raises(ConfigurationError, match="expected a JSON object"):
            ChatTemplate.from_model_dir(tmp_path)

    def test_model_dir_prefers_jinja(self, tmp_path: Path) -> None:
        _write(tmp_path, "chat_template.jinja", "jinja {{ bos_token }}")
        _write(tmp_path, "chat_template.json", {"chat_template": "json"})
        _write(tmp_path, "tokenizer_config.json", {"chat_template": "config", "bos_token": "<s>"})
        template = ChatTemplate.from_model_dir(tmp_path)
        assert template.render(USER) == "jinja <s>"
        assert template.name == str(tmp_path / "chat_template.jinja")

    def test_model_dir_chat_template_json(self, tmp_path: Path) -> None:
        _write(tmp_path, "chat_template.json", {"chat_template": "json {{ eos_token }}"})
        _write(tmp_path, "tokenizer_config.json", {"chat_template": "config"})
        _write(tmp_path, "special_tokens_map.json", {"eos_token": {"content": "</s>"}})
        assert ChatTemplate.from_model_dir(tmp_path).render(USER) == "json </s>"

    def test_model_dir_tokenizer_config(self, tmp_path: Path) -> None:
        config = {
            "chat_template": "{{ bos_token }}{{ eos_token }}",
            "bos_token": "<a>",
            "eos_token": None,
        }
        _write(tmp_path, "tokenizer_config.json", config)
        _write(tmp_path, "special_tokens_map.json", {"bos_token": "<b>", "eos_token": "<e>"})
        # tokenizer_config.json wins; special_tokens_map.json fills in what it lacks
        assert ChatTemplate.from_model_dir(tmp_path).render(USER) == "<a><e>"

    def test_model_dir_without_template(self, tmp_path: Path) -> None:
        _write(tmp_path, "tokenizer_config.json", {"bos_token": "<s>"})
        with pytest.raises(ConfigurationError) as info:
            ChatTemplate.from_model_dir(tmp_path)
        message = str(info.value)
        for looked_for in ("chat_template.jinja", "chat_template.json", "tokenizer_config.json"):
            assert looked_for in message

    def test_model_dir_not_a_directory(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match="not a directory"):
            ChatTemplate.from_model_dir(tmp_path / "missing")

    def test_read_only(self) -> None:
        template = ChatTemplate("x", bos_token="<s>")
        with pytest.raises(AttributeError):
            template.bos_token = "<t>"  # type: ignore[misc]
        with pytest.raises(TypeError):
            template.special_tokens["bos_token"] = "<t>"  # type: ignore[index]
        assert "ChatTemplate" in repr(template)


CHATML = ChatTemplate.from_model_dir(FIXTURES / "qwen3")


class TestProperties:
    """Content passes through the ChatML family untouched."""

    @settings(max_examples=200, deadline=None)
    @given(content=st.text())
    def test_user_content_verbatim(self, content: str) -> None:
        got = CHATML.render([{"role": "user", "content": content}])
        assert got == f"<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"

    @settings(max_examples=100, deadline=None)
    @given(contents=st.lists(st.text(min_size=1), min_size=1, max_size=5))
    def test_render_many_keeps_order(self, contents: list[str]) -> None:
        rendered = CHATML.render_many(contents)
        assert rendered == [CHATML.render([{"role": "user", "content": c}]) for c in contents]
