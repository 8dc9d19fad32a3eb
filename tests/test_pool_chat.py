"""Batched chat formatting in the pool: raw, client-side template, server batch chat, auto."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aurora_swarm import ChatTemplate, ConfigurationError, PromptError, VLLMPool
from aurora_swarm.testing import FakeFleet

from .conftest import BOTH_BACKENDS, MODEL, fleet_of

anyio_backend = BOTH_BACKENDS

CHATML = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def template() -> ChatTemplate:
    return ChatTemplate(CHATML, bos_token="<s>", name="chatml")


async def test_client_side_template_is_one_completions_request_per_chunk() -> None:
    async with fleet_of(2) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport, model=MODEL, max_tokens=200,
                            chat_template=template(), system_prompt="Be brief.") as pool:
            out = await pool.send_all_batched(
                ["hi", [{"role": "user", "content": "yo"}]])
            single = await pool.post_batch(0, ["solo"])
    expected = template().render([{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "hi"}])
    assert out[0].text == "ECHO: " + expected
    assert "<|im_start|>user\nyo<|im_end|>" in out[1].text
    assert single[0].text.startswith("ECHO: <s><|im_start|>system")
    totals = fleet.totals()
    assert totals.chat_requests == 0 and totals.completion_requests >= 2
    # The text already starts with BOS, so the server is told not to add another one.
    assert totals.add_special_tokens.get(False, 0) == totals.completion_requests


async def test_server_side_batch_chat() -> None:
    async with fleet_of(2, chat_batch=True) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport,
                            model=MODEL, chat_template="server") as pool:
            conversations = [[{"role": "user", "content": f"question {i}"}] for i in range(50)]
            out = await pool.send_all_batched(conversations)
    assert [r.text for r in out] == [f"ECHO: question {i}" for i in range(50)]
    assert fleet.totals().chat_batch_requests == fleet.total_requests() <= 16


async def test_server_mode_without_the_route_says_what_to_do() -> None:
    async with fleet_of(2) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport,
                            model=MODEL, chat_template="server") as pool:
            with pytest.raises(ConfigurationError, match="do not offer /v1/chat/completions/batch"):
                await pool.send_all_batched(["x"])
    assert fleet.total_requests() == 0


async def test_auto_prefers_server_batch_chat() -> None:
    async with fleet_of(2, chat_batch=True) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport,
                            model=MODEL, chat_template="auto") as pool:
            out = await pool.send_all_batched(["a", "b"])
    assert [r.text for r in out] == ["ECHO: a", "ECHO: b"]
    assert fleet.totals().chat_batch_requests >= 1


async def test_auto_falls_back_to_the_model_directory(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": CHATML, "bos_token": "<s>"}), encoding="utf-8")
    async with fleet_of(2, model_root=str(tmp_path)) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport, model=MODEL, max_tokens=100,
                            chat_template="auto") as pool:
            out = await pool.send_all_batched(["a"])
    assert out[0].text.startswith("ECHO: <s><|im_start|>user\na<|im_end|>")


async def test_auto_with_nothing_to_use_says_what_to_pass() -> None:
    async with fleet_of(1, model_root="/nonexistent/model") as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport,
                            model=MODEL, chat_template="auto") as pool:
            with pytest.raises(ConfigurationError, match="pass chat_template=<model directory"):
                await pool.send_all_batched(["a"])


async def test_per_call_override_and_template_sources(tmp_path: Path) -> None:
    jinja = tmp_path / "chat_template.jinja"
    jinja.write_text(CHATML, encoding="utf-8")
    async with fleet_of(1) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport,
                            model=MODEL, max_tokens=100) as pool:
            raw = await pool.send_all_batched(["plain"])
            from_file = await pool.send_all_batched(["plain"], chat_template=str(jinja))
            from_dir = await pool.send_all_batched(["plain"], chat_template=tmp_path)
            from_text = await pool.send_all_batched(["plain"], chat_template=CHATML)
    assert raw[0].text == "ECHO: plain"
    assert from_file[0].text == from_dir[0].text == from_text[0].text
    assert "<|im_start|>user\nplain" in from_file[0].text


def test_bad_chat_template_setting_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="is not 'auto', 'server', template text"):
        VLLMPool(["h:1"], model=MODEL, chat_template=str(tmp_path / "missing.jinja"))
    with pytest.raises(ConfigurationError, match="chat_template must be None"):
        VLLMPool(["h:1"], model=MODEL, chat_template=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="system_prompt must be a str"):
        VLLMPool(["h:1"], model=MODEL, system_prompt=["x"])  # type: ignore[arg-type]


async def test_conversation_without_template_is_refused_with_advice(fleet: FakeFleet) -> None:
    async with VLLMPool(fleet.endpoints, transport=fleet.transport, model=MODEL) as pool:
        with pytest.raises(PromptError, match=r"prompt 1: is a conversation.*chat_template="):
            await pool.send_all_batched(["a", [{"role": "user", "content": "b"}]])
        with pytest.raises(ConfigurationError, match="system_prompt needs a chat template"):
            await pool.send_all_batched(["a"], system_prompt="be nice")
        bad = [{"role": "user"}]
        with pytest.raises(PromptError, match="prompt 0: must be a str or a non-empty list"):
            await pool.send_all_batched([bad], chat_template=CHATML)  # type: ignore[list-item]


async def test_template_error_names_the_prompt(fleet: FakeFleet) -> None:
    strict = ("{% for m in messages %}{% if m['role'] == 'system' %}"
              "{{ raise_exception('no system role') }}{% endif %}{{ m['content'] }}{% endfor %}")
    async with VLLMPool(fleet.endpoints, transport=fleet.transport,
                        model=MODEL, chat_template=strict) as pool:
        with pytest.raises(PromptError, match=r"prompt 1: chat template .*no system role"):
            await pool.send_all_batched(
                ["fine", [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]])


async def test_post_and_send_all_take_conversations_and_system_prompt(fleet: FakeFleet) -> None:
    async with VLLMPool(fleet.endpoints, transport=fleet.transport,
                        model=MODEL, system_prompt="sys") as pool:
        one = await pool.post(0, [{"role": "user", "content": "first"},
                                  {"role": "assistant", "content": "ok"},
                                  {"role": "user", "content": "second"}])
        many = await pool.send_all(["x", "y"])
    assert one.text == "ECHO: second"
    assert [r.text for r in many] == ["ECHO: x", "ECHO: y"]
