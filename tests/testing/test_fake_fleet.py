"""The fake vLLM fleet, exercised over real HTTP on loopback with httpx2 and the openai client."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

import aurora_swarm.testing as testing
from aurora_swarm import Endpoint, parse_hostfile
from aurora_swarm.testing import (
    EndpointBehavior,
    FakeFleet,
    LatencyModel,
    chat_prompt_tokens,
    expected_answer,
    expected_chat_answer,
    prompt_tokens,
)
from aurora_swarm.testing._latency import Booking, SlotSchedule

# Loopback servers and subprocesses: integration tests, left out of the unit suite by
# `-m "not integration"`.
pytestmark = pytest.mark.integration

MODEL = "fake-model"


@pytest.fixture
async def client() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=10.0) as c:
        yield c


async def complete(
    client: httpx2.AsyncClient, endpoint: Endpoint, prompt: Any, **fields: Any
) -> httpx2.Response:
    body = {"model": MODEL, "prompt": prompt, **fields}
    return await client.post(endpoint.base_url + "/completions", json=body)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# -- the public surface and the answer rule ------------------------------------------------------


def test_exports_are_exactly_the_public_names() -> None:
    assert sorted(testing.__all__) == [
        "ACTIONS",
        "Clock",
        "EndpointBehavior",
        "EndpointCounters",
        "FakeClock",
        "FakeFleet",
        "LatencyModel",
        "MockTransport",
        "RealClock",
        "TRANSIENT_FAULTS",
        "chat_prompt_tokens",
        "expected_answer",
        "expected_chat_answer",
        "expected_embedding",
        "prompt_tokens",
        "serve_fleet",
    ]
    for name in testing.__all__:
        assert getattr(testing, name).__doc__, name


def test_expected_answer_cuts_at_max_tokens_words() -> None:
    assert expected_answer("a  b\tc") == ("ECHO: a  b\tc", "stop")
    assert expected_answer("a  b\tc", 4) == ("ECHO: a  b\tc", "stop")
    assert expected_answer("a  b\tc", 3) == ("ECHO: a b", "length")
    assert expected_answer("", 1) == ("ECHO: ", "stop")


@given(st.text(max_size=200), st.integers(min_value=1, max_value=50))
def test_token_counts_never_exceed_utf8_bytes(prompt: str, max_tokens: int) -> None:
    assert prompt_tokens(prompt, add_special_tokens=False) <= len(prompt.encode("utf-8"))
    assert prompt_tokens(prompt) <= len(prompt.encode("utf-8")) + 1
    text, finish = expected_answer(prompt, max_tokens)
    assert len(text.split()) <= max_tokens
    assert (finish == "length") == (len(("ECHO: " + prompt).split()) > max_tokens)


def test_behavior_and_latency_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown action"):
        EndpointBehavior(script=("ok", "explode"))
    with pytest.raises(ValueError, match="slowness"):
        EndpointBehavior(slowness=0)
    with pytest.raises(ValueError, match="fault_rate"):
        EndpointBehavior(fault_rate=1.5)
    with pytest.raises(ValueError, match=">= 0"):
        LatencyModel(prompt_time=-1)
    with pytest.raises(ValueError, match="out of range"):
        FakeFleet(2, behaviors={2: EndpointBehavior()})
    with pytest.raises(ValueError, match="3 behaviors for 2"):
        FakeFleet(2, behaviors=[EndpointBehavior()] * 3)
    assert EndpointBehavior(script=("502", "429")).script == ("502", "429")
    assert EndpointBehavior(script="drop").script == ("drop",)


# -- routes ----------------------------------------------------------------------------------------


async def test_health_models_and_unknown_routes(client: httpx2.AsyncClient) -> None:
    async with FakeFleet(2, max_model_len=1234, model_root="/models/fake") as fleet:
        ep = fleet.endpoints[1]
        health = await client.get(ep.url + "/health")
        assert health.status_code == 200
        models = (await client.get(ep.base_url + "/models")).json()
        assert models["object"] == "list"
        (card,) = models["data"]
        assert card["id"] == MODEL
        assert card["object"] == "model"
        assert card["owned_by"] == "vllm"
        assert card["root"] == "/models/fake"
        assert card["parent"] is None
        assert card["max_model_len"] == 1234
        missing = await client.get(ep.base_url + "/nothing")
        assert missing.status_code == 404
        assert missing.json() == {"detail": "Not Found"}
        wrong_method = await client.get(ep.base_url + "/completions")
        assert wrong_method.status_code == 405
        assert fleet.counters(1).requests == {
            "/health": 1,
            "/v1/models": 1,
            "other": 1,
            "/v1/completions": 1,
        }
        assert fleet.total_requests() == 0  # none of those is an inference request


async def test_model_root_defaults_to_model_name(client: httpx2.AsyncClient) -> None:
    async with FakeFleet(1, model="org/m-7b") as fleet:
        card = (await client.get(fleet.endpoints[0].base_url + "/models")).json()["data"][0]
        assert (card["id"], card["root"], card["max_model_len"]) == ("org/m-7b", "org/m-7b", 4096)


async def test_completion_with_openai_client() -> None:
    async with FakeFleet(1) as fleet:
        api = openai.AsyncOpenAI(base_url=fleet.endpoints[0].base_url, api_key="x", max_retries=0)
        async with api:
            out = await api.completions.create(model=MODEL, prompt="the sky is", max_tokens=10)
        (choice,) = out.choices
        assert (choice.index, choice.text, choice.finish_reason) == (0, "ECHO: the sky is", "stop")
        assert out.object == "text_completion"
        assert out.model == MODEL
        assert out.usage is not None
        assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (4, 4)
        assert out.usage.total_tokens == 8


async def test_list_prompt_gets_one_choice_per_prompt_in_index_order(
    client: httpx2.AsyncClient,
) -> None:
    prompts = [f"prompt {i} " + "word " * (i % 7) for i in range(50)]
    async with FakeFleet(1) as fleet:
        body = (await complete(client, fleet.endpoints[0], prompts, max_tokens=5)).json()
        choices = body["choices"]
        assert [c["index"] for c in choices] == list(range(50))
        for prompt, choice in zip(prompts, choices, strict=True):
            assert (choice["text"], choice["finish_reason"]) == expected_answer(prompt, 5)
            assert choice["logprobs"] is None
            assert choice["stop_reason"] is None
        usage = body["usage"]
        assert usage["prompt_tokens"] == sum(prompt_tokens(p) for p in prompts)
        assert usage["completion_tokens"] == sum(
            len(expected_answer(p, 5)[0].split()) for p in prompts
        )
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        counters = fleet.counters(0)
        assert (counters.completion_requests, counters.prompts_received) == (1, 50)
        assert counters.choices_returned == 50


async def test_max_tokens_defaults_to_16_like_vllm(client: httpx2.AsyncClient) -> None:
    prompt = " ".join(f"w{i}" for i in range(30))
    async with FakeFleet(1) as fleet:
        body = (await complete(client, fleet.endpoints[0], prompt)).json()
        (choice,) = body["choices"]
        assert choice["finish_reason"] == "length"
        assert len(choice["text"].split()) == 16
        assert choice["text"] == expected_answer(prompt, 16)[0]


async def test_add_special_tokens_is_counted_and_changes_prompt_tokens(
    client: httpx2.AsyncClient,
) -> None:
    async with FakeFleet(1) as fleet:
        ep = fleet.endpoints[0]
        with_bos = (await complete(client, ep, "a b c")).json()["usage"]["prompt_tokens"]
        without = await complete(client, ep, "a b c", add_special_tokens=False)
        await complete(client, ep, "a b c", add_special_tokens=True)
        assert (with_bos, without.json()["usage"]["prompt_tokens"]) == (4, 3)
        assert fleet.counters(0).add_special_tokens == {None: 1, False: 1, True: 1}


async def test_wrong_model_gets_vllm_404(client: httpx2.AsyncClient) -> None:
    async with FakeFleet(1) as fleet:
        reply = await complete(client, fleet.endpoints[0], "hi", model="other")
        assert reply.status_code == 404
        error = reply.json()["error"]
        assert error["message"] == "The model `other` does not exist."
        assert (error["type"], error["code"]) == ("NotFoundError", 404)
        assert fleet.counters(0).rejected == 1
        assert fleet.counters(0).choices_returned == 0


async def test_too_long_prompt_gets_vllm_400(client: httpx2.AsyncClient) -> None:
    async with FakeFleet(1, max_model_len=20) as fleet:
        ep = fleet.endpoints[0]
        fits = await complete(client, ep, "w " * 9, max_tokens=10)  # 9 words + BOS + 10 = 20
        assert fits.status_code == 200
        reply = await complete(client, ep, ["short", "w " * 10], max_tokens=10)
        assert reply.status_code == 400
        error = reply.json()["error"]
        assert error["message"].startswith(
            "This model's maximum context length is 20 tokens. However, you requested 10 output "
            "tokens and your prompt contains 11 input tokens, for a total of 21 tokens."
        )
        assert (error["type"], error["code"]) == ("BadRequestError", 400)


@pytest.mark.parametrize("prompt", [[1, 2, 3], [[1, 2], [3]], [], 7, None])
async def test_prompts_that_are_not_text_get_400(client: httpx2.AsyncClient, prompt: Any) -> None:
    async with FakeFleet(1) as fleet:
        reply = await complete(client, fleet.endpoints[0], prompt)
        assert reply.status_code == 400
        assert reply.json()["error"]["type"] == "BadRequestError"
        broken = await client.post(fleet.endpoints[0].base_url + "/completions", content=b"{no")
        assert broken.status_code == 400


async def test_chat_completion_answers_last_user_message() -> None:
    messages: list[Any] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "what is two plus two"},
    ]
    async with FakeFleet(1) as fleet:
        api = openai.AsyncOpenAI(base_url=fleet.endpoints[0].base_url, api_key="x", max_retries=0)
        async with api:
            out = await api.chat.completions.create(model=MODEL, messages=messages, max_tokens=4)
        (choice,) = out.choices
        assert choice.message.role == "assistant"
        assert choice.message.content == "ECHO: what is two"
        assert choice.finish_reason == "length"
        assert (choice.message.content, choice.finish_reason) == expected_chat_answer(messages, 4)
        assert out.usage is not None
        assert out.usage.prompt_tokens == chat_prompt_tokens(messages) == 10 + 4 * 4
        assert fleet.counters(0).chat_requests == 1


async def test_chat_batch_is_404_when_off_and_consumes_no_script(
    client: httpx2.AsyncClient,
) -> None:
    async with FakeFleet(1, behaviors=[EndpointBehavior(script=("503",))]) as fleet:
        ep = fleet.endpoints[0]
        body = {"model": MODEL, "messages": [user("a"), user("b")]}
        reply = await client.post(ep.base_url + "/chat/completions/batch", json=body)
        assert reply.status_code == 404
        assert reply.json() == {"detail": "Not Found"}
        first = await complete(client, ep, "x")
        assert first.status_code == 503  # the script's first action went to this request


async def test_chat_batch_answers_each_conversation(client: httpx2.AsyncClient) -> None:
    conversations = [user(f"question number {i}") for i in range(5)]
    conversations[2] = [{"role": "system", "content": "s"}, *user("third one here")]
    async with FakeFleet(1, chat_batch=True) as fleet:
        body = {"model": MODEL, "messages": conversations, "max_tokens": 3}
        reply = await client.post(
            fleet.endpoints[0].base_url + "/chat/completions/batch", json=body
        )
        assert reply.status_code == 200
        out = reply.json()
        assert out["object"] == "chat.completion"
        assert [c["index"] for c in out["choices"]] == list(range(5))
        for conv, choice in zip(conversations, out["choices"], strict=True):
            assert choice["message"] == {
                "role": "assistant",
                "content": expected_chat_answer(conv, 3)[0],
            }
            assert choice["finish_reason"] == expected_chat_answer(conv, 3)[1]
        assert out["usage"]["prompt_tokens"] == sum(chat_prompt_tokens(c) for c in conversations)
        counters = fleet.counters(0)
        assert (counters.chat_batch_requests, counters.prompts_received) == (1, 5)
        flat = await client.post(
            fleet.endpoints[0].base_url + "/chat/completions/batch",
            json={"model": MODEL, "messages": user("not a list of conversations")},
        )
        assert flat.status_code == 400


async def test_tokenize_agrees_with_usage(client: httpx2.AsyncClient) -> None:
    async with FakeFleet(1) as fleet:
        ep = fleet.endpoints[0]
        tok = (await client.post(ep.url + "/tokenize", json={"prompt": "one two three"})).json()
        assert tok["count"] == len(tok["tokens"]) == 4
        assert tok["max_model_len"] == 4096
        plain = await client.post(
            ep.url + "/tokenize", json={"prompt": "one two three", "add_special_tokens": False}
        )
        assert plain.json()["count"] == 3
        messages = [{"role": "system", "content": "x y"}, *user("z")]
        chat = (await client.post(ep.url + "/tokenize", json={"messages": messages})).json()
        assert chat["count"] == chat_prompt_tokens(messages) == 3 + 8
        usage = (await complete(client, ep, "one two three")).json()["usage"]
        assert usage["prompt_tokens"] == tok["count"]


# -- faults ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "status", "err_type"),
    [
        ("500", 500, "InternalServerError"),
        ("503", 503, "ServiceUnavailableError"),
        ("429", 429, "RateLimitError"),
        ("502", 502, "BadGatewayError"),
    ],
)
async def test_status_faults(
    client: httpx2.AsyncClient, action: str, status: int, err_type: str
) -> None:
    behavior = EndpointBehavior(script=(action,), retry_after=0.25)
    async with FakeFleet(1, behaviors={0: behavior}) as fleet:
        ep = fleet.endpoints[0]
        reply = await complete(client, ep, ["a", "b"])
        assert reply.status_code == status
        error = reply.json()["error"]
        assert (error["type"], error["code"]) == (err_type, status)
        assert reply.headers.get("retry-after") == ("0.25" if status == 429 else None)
        after = await complete(client, ep, ["a", "b"])
        assert after.status_code == 200
        counters = fleet.counters(0)
        assert counters.faults == {action: 1}
        assert counters.prompts_received == 4
        assert counters.choices_returned == 2


async def test_shuffle_keeps_indices_but_changes_order(client: httpx2.AsyncClient) -> None:
    prompts = [f"p{i}" for i in range(20)]
    async with FakeFleet(1, behaviors={0: EndpointBehavior(shuffle_choices=True)}) as fleet:
        for _ in range(3):
            choices = (await complete(client, fleet.endpoints[0], prompts)).json()["choices"]
            indices = [c["index"] for c in choices]
            assert indices != list(range(20))
            assert sorted(indices) == list(range(20))
            for choice in choices:
                assert choice["text"] == expected_answer(prompts[choice["index"]], 16)[0]
        assert fleet.counters(0).faults == {"shuffle": 3}


async def test_partial_and_dup_garble_the_choices(client: httpx2.AsyncClient) -> None:
    prompts = ["a", "b", "c", "d"]
    behavior = EndpointBehavior(script=("partial", "dup", "dup"))
    async with FakeFleet(1, behaviors={0: behavior}) as fleet:
        ep = fleet.endpoints[0]
        partial = (await complete(client, ep, prompts)).json()["choices"]
        assert [c["index"] for c in partial] == [0, 1, 2]
        dup = (await complete(client, ep, prompts)).json()["choices"]
        assert [c["index"] for c in dup] == [0, 1, 2, 0]
        assert dup[3]["text"] == expected_answer("a")[0]
        single = (await complete(client, ep, "only")).json()["choices"]
        assert [c["index"] for c in single] == [0, 0]
        assert fleet.counters(0).choices_returned == 3 + 4 + 2


async def test_badjson_is_200_with_a_body_that_is_not_json(client: httpx2.AsyncClient) -> None:
    async with FakeFleet(1, behaviors={0: EndpointBehavior(script=("badjson",))}) as fleet:
        reply = await complete(client, fleet.endpoints[0], "x")
        assert reply.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            reply.json()


async def test_drop_closes_the_connection_without_an_answer(client: httpx2.AsyncClient) -> None:
    async with FakeFleet(1, behaviors={0: EndpointBehavior(script=("drop",))}) as fleet:
        with pytest.raises(httpx2.RemoteProtocolError):
            await complete(client, fleet.endpoints[0], "x")
        assert (await complete(client, fleet.endpoints[0], "x")).status_code == 200
        assert fleet.counters(0).faults == {"drop": 1}


async def test_hang_lasts_until_the_client_gives_up_and_does_not_block_close() -> None:
    async with httpx2.AsyncClient(timeout=0.3) as short:
        fleet = FakeFleet(1, behaviors={0: EndpointBehavior(default_action="hang")})
        async with fleet:
            started = time.perf_counter()
            with pytest.raises(httpx2.ReadTimeout):
                await complete(short, fleet.endpoints[0], "x")
            assert time.perf_counter() - started >= 0.25
            pending = asyncio.ensure_future(complete(short, fleet.endpoints[0], "y"))
            await asyncio.sleep(0.05)
        closing = time.perf_counter() - started
        assert closing < 2.0
        with pytest.raises(httpx2.TransportError):
            await pending
        assert fleet.counters(0).faults == {"hang": 2}


async def test_die_stops_the_endpoint_and_refuses_later_connects(
    client: httpx2.AsyncClient,
) -> None:
    async with FakeFleet(2, behaviors={0: EndpointBehavior(die_after=2)}) as fleet:
        ep = fleet.endpoints[0]
        assert (await complete(client, ep, "1")).status_code == 200
        assert (await complete(client, ep, "2")).status_code == 200
        with pytest.raises(httpx2.TransportError):
            await complete(client, ep, "3")  # the third request makes it die
        assert not fleet.is_alive(0)
        with pytest.raises(httpx2.ConnectError):
            await client.get(ep.url + "/health")
        assert (await complete(client, fleet.endpoints[1], "ok")).status_code == 200
        assert fleet.counters(0).faults == {"die": 1}
        await fleet.restart(0)  # a fresh server: the die_after count starts over
        assert fleet.endpoints[0] == ep
        assert (await client.get(ep.url + "/health")).status_code == 200
        assert (await complete(client, ep, "4")).status_code == 200


async def test_script_die_drops_other_connections_too() -> None:
    behavior = EndpointBehavior(script=("hang", "die"))
    async with FakeFleet(1, behaviors={0: behavior}) as fleet, httpx2.AsyncClient() as c:
        ep = fleet.endpoints[0]
        hanging = asyncio.ensure_future(complete(c, ep, "waits"))
        await asyncio.sleep(0.05)
        with pytest.raises(httpx2.TransportError):
            await complete(c, ep, "dies")
        with pytest.raises(httpx2.TransportError):
            await asyncio.wait_for(hanging, 2.0)


async def test_fail_first_and_rate_limit_every(client: httpx2.AsyncClient) -> None:
    behavior = EndpointBehavior(
        script=("ok",), fail_first=3, fail_status=500, rate_limit_every=4, retry_after=1.5
    )
    async with FakeFleet(1, behaviors={0: behavior}) as fleet:
        statuses = [(await complete(client, fleet.endpoints[0], "x")).status_code for _ in range(9)]
        assert statuses == [200, 500, 500, 429, 200, 200, 200, 429, 200]
        assert fleet.counters(0).faults == {"500": 2, "429": 2}


async def test_health_and_models_do_not_consume_the_script(client: httpx2.AsyncClient) -> None:
    async with FakeFleet(1, behaviors={0: EndpointBehavior(script=("ok", "500"))}) as fleet:
        ep = fleet.endpoints[0]
        for _ in range(3):
            assert (await client.get(ep.url + "/health")).status_code == 200
            assert (await client.get(ep.base_url + "/models")).status_code == 200
        assert (await complete(client, ep, "x")).status_code == 200
        assert (await complete(client, ep, "x")).status_code == 500


async def test_seeded_random_faults_are_reproducible(client: httpx2.AsyncClient) -> None:
    behavior = EndpointBehavior(fault_rate=0.3, fault_actions=("500", "503"), seed=42)

    async def run() -> list[int]:
        async with FakeFleet(2, behaviors=[behavior, behavior]) as fleet:
            return [
                (await complete(client, fleet.endpoints[i % 2], "x")).status_code
                for i in range(200)
            ]

    first, second = await run(), await run()
    assert first == second
    failures = sum(status != 200 for status in first)
    assert 30 <= failures <= 95  # 0.3 of 200 = 60
    assert set(first) == {200, 500, 503}
    assert first[0::2] != first[1::2]  # each endpoint has its own stream


# -- latency ---------------------------------------------------------------------------------------


async def timed_completion(client: httpx2.AsyncClient, ep: Endpoint, n: int) -> float:
    started = time.perf_counter()
    reply = await complete(client, ep, [f"p{i}" for i in range(n)])
    assert reply.status_code == 200
    return time.perf_counter() - started


async def test_zero_latency_answers_at_once(client: httpx2.AsyncClient) -> None:
    async with FakeFleet(1) as fleet:
        await timed_completion(client, fleet.endpoints[0], 1)  # connect first
        assert await timed_completion(client, fleet.endpoints[0], 256) < 0.5


async def test_prompts_share_limited_slots_and_slowness_scales(
    client: httpx2.AsyncClient,
) -> None:
    latency = LatencyModel(prompt_time=0.02, max_concurrent_seqs=32)
    behaviors = {1: EndpointBehavior(slowness=3.0)}
    async with FakeFleet(2, latency=latency, behaviors=behaviors) as fleet:
        fast, slow = fleet.endpoints
        assert 0.018 <= await timed_completion(client, fast, 32) < 0.2  # one wave
        assert 0.038 <= await timed_completion(client, fast, 64) < 0.25  # two waves
        assert 0.118 <= await timed_completion(client, slow, 64) < 0.45  # two waves of 60 ms


async def test_slots_are_shared_first_come_first_served_across_requests() -> None:
    latency = LatencyModel(prompt_time=0.05, max_concurrent_seqs=4)
    async with FakeFleet(1, latency=latency) as fleet, httpx2.AsyncClient() as c:
        ep = fleet.endpoints[0]
        first = asyncio.ensure_future(timed_completion(c, ep, 4))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(timed_completion(c, ep, 4))
        one, two = await asyncio.gather(first, second)
        assert 0.048 <= one < 0.2
        assert 0.085 <= two < 0.3  # waited for the first request's slots
        assert fleet.counters(0).max_in_flight == 2
        assert fleet.counters(0).in_flight == 0


async def test_unlimited_slots_and_request_overhead(client: httpx2.AsyncClient) -> None:
    latency = LatencyModel(request_overhead=0.05, prompt_time=0.02, token_time=0.01)
    async with FakeFleet(1, latency=latency) as fleet:
        ep = fleet.endpoints[0]
        await client.get(ep.url + "/health")
        # 100 prompts at once; each "pN" answer is two tokens: 0.05 + 0.02 + 2 * 0.01 = 90 ms
        assert 0.088 <= await timed_completion(client, ep, 100) < 0.4


async def test_a_client_that_goes_away_aborts_its_work_and_frees_its_slots() -> None:
    latency = LatencyModel(prompt_time=0.2, max_concurrent_seqs=1)
    async with FakeFleet(1, latency=latency) as fleet, httpx2.AsyncClient() as c:
        ep = fleet.endpoints[0]
        body = {"prompt": ["a", "b", "c", "d", "e"]}  # five prompts on one slot: a whole second
        with pytest.raises(httpx2.ReadTimeout):
            await c.post(ep.base_url + "/completions", json=body, timeout=0.1)
        await asyncio.sleep(0.05)
        counters = fleet.counters(0)
        assert (counters.in_flight, counters.abandoned, counters.choices_returned) == (0, 1, 0)
        assert 0.19 <= await timed_completion(c, ep, 1) < 0.6  # not after the abandoned second


def test_the_slot_queue_plans_first_come_first_served_across_requests() -> None:
    queue = SlotSchedule(4)
    first = queue.book(0.0, [1.0] * 6)  # four run from 0; two wait for the first slots free
    second = queue.book(0.1, [1.0] * 3)
    third = queue.book(0.2, [1.0] * 2)
    assert first.starts == [0.0] * 4 + [1.0] * 2
    assert (first.due, second.due, third.due) == (2.0, 3.0, 3.0)
    assert queue.counts(0.5) == (4, 7)
    assert queue.counts(1.5) == (4, 3)
    assert queue.leave(first, 2.0) == 0  # answered: nothing to free
    assert queue.counts(2.5) == (3, 0)


def test_cancelling_a_waiting_request_moves_every_request_behind_it_up() -> None:
    queue = SlotSchedule(4)
    running = queue.book(0.0, [1.0] * 4)
    gone = queue.book(0.0, [1.0] * 4)
    behind = queue.book(0.0, [1.0] * 4)
    assert behind.due == 3.0
    assert queue.leave(gone, 0.5) == 4  # all four were waiting
    assert (running.due, behind.due) == (1.0, 2.0)
    assert behind.starts == [1.0] * 4  # they take the slots the first request frees
    assert queue.counts(0.5) == (4, 4)


def test_cancelling_a_running_request_frees_its_slots_at_once() -> None:
    queue = SlotSchedule(4)
    gone = queue.book(0.0, [1.0] * 6)
    behind = queue.book(0.0, [1.0] * 4)
    assert behind.due == 3.0
    assert queue.leave(gone, 0.25) == 6
    assert behind.starts == [0.25] * 4
    assert behind.due == 1.25
    assert queue.counts(0.5) == (4, 0)
    later = queue.book(0.5, [1.0])  # a new request queues behind what is left
    assert later.starts == [1.25]


def test_the_slot_queue_counts_slot_time_and_busy_time_as_vllm_counts_steps() -> None:
    # Slot time over busy time is how many prompts ran at once while any ran: the fake
    # server publishes them as generated tokens and engine steps.
    queue = SlotSchedule(4)
    first = queue.book(0.0, [1.0] * 6)  # 4 run over [0, 1], 2 over [1, 2]
    assert queue.work(0.5) == (2.0, 0.5)
    assert queue.work(2.0) == (6.0, 2.0)
    queue.leave(first, 2.0)
    later = queue.book(3.0, [1.0, 1.0])  # idle over [2, 3]: not busy
    assert queue.work(3.5) == (7.0, 2.5)
    queue.leave(later, 3.5)  # aborted half-way: its slots count until then
    assert queue.work(10.0) == (7.0, 2.5)
    unlimited = SlotSchedule(0)
    gone = unlimited.book(0.0, [1.0, 3.0])
    unlimited.leave(gone, 2.0)
    assert unlimited.work(5.0) == (3.0, 2.0)


def test_unlimited_slots_run_every_prompt_at_once() -> None:
    queue = SlotSchedule(0)
    one = queue.book(0.5, [1.0, 2.0])  # ready after an overhead of 0.5
    two = queue.book(0.5, [1.0])
    assert (one.due, two.due) == (2.5, 1.5)
    assert queue.counts(0.25) == (0, 0)  # still in the overhead: not queued yet
    assert queue.counts(1.0) == (3, 0)
    assert queue.counts(2.0) == (1, 0)
    assert queue.leave(one, 2.0) == 1
    assert queue.counts(1.0) == (1, 0)


@given(
    slots=st.integers(1, 6),
    overhead=st.sampled_from([0.0, 0.3]),
    uneven=st.booleans(),
    ops=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 8), st.booleans(), st.floats(0.1, 2.0)),
        min_size=1,
        max_size=25,
    ),
)
def test_the_slot_queue_never_overbooks_and_a_cancel_frees_slots_for_those_behind(
    slots: int, overhead: float, uneven: bool, ops: list[tuple[int, int, bool, float]]
) -> None:
    queue = SlotSchedule(slots)
    live: list[Booking] = []
    gone: list[tuple[Booking, float]] = []
    now = 0.0
    for step, n, leaves, service in ops:
        now += step * 0.25
        if leaves and live:  # a client goes away
            victim = live.pop(len(live) // 2)
            before = [(b, b.due, list(b.starts)) for b in live]
            freed = queue.leave(victim, now)
            assert freed == sum(1 for end in victim.ends if end > now)
            gone.append((victim, now))
            for booking, due, starts in before:
                if not uneven:  # equal prompt times: nobody is later
                    assert booking.due <= due + 1e-9
                started = [s for s in starts if s <= now]
                assert booking.starts[: len(started)] == started  # what runs keeps its times
        else:
            times = [service * (1 + k % 3 if uneven else 1) for k in range(n)]
            live.append(queue.book(now + overhead, times))
    # Whatever ran (cut short at its cancel) and whatever is planned never holds more than the
    # slots: check at every moment something starts.
    spans = [(s, e) for b in live for s, e in zip(b.starts, b.ends, strict=True)]
    for booking, at in gone:
        spans += [(s, min(e, at)) for s, e in zip(booking.starts, booking.ends, strict=True)]
    for t, _ in spans:
        assert sum(1 for s, e in spans if s <= t < e) <= slots
    for booking in live:  # a prompt waits only while every slot is busy
        for start in booking.starts:
            if start > booking.ready:
                assert sum(1 for s, e in spans if s < start <= e) >= slots
    for a, b in itertools.pairwise(live):  # first come, first served
        if a.starts and b.starts:
            assert a.starts[0] <= b.starts[0]


async def metrics(client: httpx2.AsyncClient, endpoint: Endpoint) -> tuple[float, float]:
    reply = await client.get(endpoint.url + "/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    values = {}
    for line in reply.text.splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    label = f'{{model_name="{MODEL}"}}'
    return values["vllm:num_requests_running" + label], values["vllm:num_requests_waiting" + label]


async def test_metrics_count_running_and_waiting_prompts_as_vllm_does() -> None:
    latency = LatencyModel(prompt_time=0.5, max_concurrent_seqs=128)
    async with FakeFleet(1, latency=latency) as fleet, httpx2.AsyncClient(timeout=10) as c:
        ep = fleet.endpoints[0]
        assert await metrics(c, ep) == (0, 0)
        big = asyncio.ensure_future(timed_completion(c, ep, 300))  # three waves of 128
        await asyncio.sleep(0.2)
        assert await metrics(c, ep) == (128, 172)
        await big
        assert await metrics(c, ep) == (0, 0)
        assert fleet.counters(0).requests["/metrics"] == 3


async def test_metrics_with_unlimited_slots_show_every_prompt_running() -> None:
    latency = LatencyModel(prompt_time=0.5)
    async with FakeFleet(1, latency=latency) as fleet, httpx2.AsyncClient(timeout=10) as c:
        ep = fleet.endpoints[0]
        big = asyncio.ensure_future(timed_completion(c, ep, 300))
        await asyncio.sleep(0.2)
        assert await metrics(c, ep) == (300, 0)
        await big


async def test_metrics_can_be_turned_off(client: httpx2.AsyncClient) -> None:
    async with FakeFleet(1, metrics=False) as fleet:
        reply = await client.get(fleet.endpoints[0].url + "/metrics")
        assert reply.status_code == 404
        assert fleet.counters(0).requests == {"other": 1}


async def cancel_one_and_time_the_next(cancel: bool) -> tuple[float, tuple[float, float]]:
    """Three requests of 4 prompts on 4 slots of 0.5 s; the second goes away if ``cancel``.

    Returns the third's time and the gauges while the second (or the third) runs.
    """
    latency = LatencyModel(prompt_time=0.5, max_concurrent_seqs=4)
    async with FakeFleet(1, latency=latency) as fleet, httpx2.AsyncClient(timeout=10) as c:
        ep = fleet.endpoints[0]
        await c.get(ep.url + "/health")  # connect first
        first = asyncio.ensure_future(timed_completion(c, ep, 4))
        await asyncio.sleep(0.02)
        second = asyncio.ensure_future(complete(c, ep, ["a", "b", "c", "d"]))
        await asyncio.sleep(0.02)
        third = asyncio.ensure_future(timed_completion(c, ep, 4))
        await asyncio.sleep(0.1)
        if cancel:
            second.cancel()  # the client closes the connection
        await first  # done at 0.5 s; the second (or the third) runs until 1.0 s
        gauges = await metrics(c, ep)
        took = await third
        if cancel:
            assert fleet.counters(0).abandoned == 1
            assert fleet.counters(0).aborted_prompts == 4
        else:
            await second
            assert fleet.counters(0).aborted_prompts == 0
        return took, gauges


async def test_cancelling_a_queued_request_lets_the_one_behind_it_finish_sooner() -> None:
    slow, queued = await cancel_one_and_time_the_next(cancel=False)
    fast, moved_up = await cancel_one_and_time_the_next(cancel=True)
    assert queued == (4, 4)  # the second runs, the third waits behind it
    assert moved_up == (4, 0)  # the third took the second's place
    assert slow >= 1.45  # three waves of 0.5 s
    assert 0.95 <= fast < 1.4  # two


# -- counters, control, hostfile, many endpoints ---------------------------------------------------


async def test_counters_totals_and_reset(client: httpx2.AsyncClient) -> None:
    async with FakeFleet(3, chat_batch=True) as fleet:
        e0, e1, e2 = fleet.endpoints
        await complete(client, e0, ["a", "b", "c"])
        await complete(client, e1, "d")
        await client.post(e2.base_url + "/chat/completions", json={"messages": user("e")})
        batch = {"messages": [user("f"), user("g")]}
        await client.post(e2.base_url + "/chat/completions/batch", json=batch)
        assert fleet.total_requests() == 4
        assert fleet.total_prompts() == 7
        totals = fleet.totals()
        assert totals.inference_requests == 4
        assert (totals.completion_requests, totals.chat_requests) == (2, 1)
        assert totals.chat_batch_requests == 1
        assert totals.choices_returned == 7
        assert totals.requests["/v1/completions"] == 2
        assert totals.max_in_flight >= 1
        assert fleet.counters(2).prompts_received == 3
        fleet.reset_counters()
        assert fleet.total_requests() == fleet.total_prompts() == 0
        assert fleet.counters(0).requests == {}
        with pytest.raises(IndexError):
            fleet.counters(3)


async def test_kill_drops_requests_in_flight_and_refuses_new_ones() -> None:
    latency = LatencyModel(prompt_time=5.0, max_concurrent_seqs=1)
    async with FakeFleet(2, latency=latency) as fleet, httpx2.AsyncClient() as c:
        ep = fleet.endpoints[0]
        in_flight = asyncio.ensure_future(complete(c, ep, "slow"))
        await asyncio.sleep(0.05)
        assert fleet.counters(0).in_flight == 1
        started = time.perf_counter()
        await fleet.kill(0)
        with pytest.raises(httpx2.TransportError):
            await in_flight
        assert time.perf_counter() - started < 1.0
        assert fleet.counters(0).in_flight == 0
        with pytest.raises(httpx2.ConnectError):
            await c.get(ep.url + "/health")
        assert fleet.is_alive(1)
        await fleet.kill(0)  # killing a dead endpoint does nothing


async def test_connections_accepted_as_the_endpoint_stops_are_closed_not_leaked() -> None:
    """asyncio makes an accepted connection's transport a loop step after accept(): a stop in
    between must not leave that socket open (unclosed-socket ResourceWarning at collection)."""
    async with FakeFleet(4) as fleet:
        for index, ep in enumerate(fleet.endpoints):
            socks = [socket.create_connection((ep.host, ep.port), timeout=2) for _ in range(3)]
            try:
                for _ in range(index):  # stop at each step of the accept: before, in between, after
                    await asyncio.sleep(0)
                await fleet.kill(index)
                for sock in socks:  # every connection is closed by the time kill() returns
                    with contextlib.suppress(ConnectionResetError):  # never accepted: reset
                        assert sock.recv(1) == b""
            finally:
                for sock in socks:
                    sock.close()
            assert not fleet.is_alive(index)


async def test_restart_with_a_new_behavior(client: httpx2.AsyncClient) -> None:
    async with FakeFleet(1) as fleet:
        ep = fleet.endpoints[0]
        await fleet.kill(0)
        await fleet.restart(0, EndpointBehavior(script=("503",)))
        assert fleet.behavior(0).script == ("503",)
        assert (await complete(client, ep, "x")).status_code == 503
        assert fleet.counters(0).completion_requests == 1


async def test_lifecycle_start_once_close_twice() -> None:
    fleet = FakeFleet(1)
    async with fleet:
        with pytest.raises(RuntimeError, match="starts once"):
            await fleet.start()
    await fleet.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await fleet.kill(0)
    assert "closed" in repr(fleet)


async def test_write_hostfile_round_trips_through_parse_hostfile(tmp_path: Path) -> None:
    async with FakeFleet(3, model="m1") as fleet:
        path = fleet.write_hostfile(tmp_path / "fleet.hostfile", tags={"role": "worker"})
        lines = path.read_text().splitlines()
        assert lines[0] == f"127.0.0.1\t{fleet.endpoints[0].port}\tmodel=m1\trole=worker"
        parsed = parse_hostfile(path)
        assert [(e.host, e.port) for e in parsed] == [(e.host, e.port) for e in fleet.endpoints]
        assert all(dict(e.tags) == {"model": "m1", "role": "worker"} for e in parsed)
        per = fleet.write_hostfile(tmp_path / "per", tags=[{"i": str(i)} for i in range(3)])
        assert [e.tags["i"] for e in parse_hostfile(per)] == ["0", "1", "2"]
        with pytest.raises(ValueError, match="hostfile column"):
            fleet.write_hostfile(tmp_path / "bad", tags={"role": "two words"})


async def test_given_ports_are_used(client: httpx2.AsyncClient) -> None:
    async with FakeFleet(1) as probe:
        free = probe.endpoints[0].port  # free again once the probe closes
    async with FakeFleet(1, ports=[free]) as fleet:
        assert fleet.endpoints[0].port == free
        assert (await client.get(fleet.endpoints[0].url + "/health")).status_code == 200
        with pytest.raises(OSError, match="cannot start fake endpoint 0"):
            await FakeFleet(1, ports=[free]).start()


async def test_two_hundred_endpoints_start_fast_and_all_answer() -> None:
    limits = httpx2.Limits(max_connections=400)
    started = time.perf_counter()
    async with FakeFleet(200) as fleet, httpx2.AsyncClient(limits=limits) as c:
        assert time.perf_counter() - started < 5.0
        assert len({e.port for e in fleet.endpoints}) == 200
        replies = await asyncio.gather(*(complete(c, e, str(e.port)) for e in fleet.endpoints))
        for ep, reply in zip(fleet.endpoints, replies, strict=True):
            assert reply.json()["choices"][0]["text"] == f"ECHO: {ep.port}"
        assert all(fleet.counters(i).completion_requests == 1 for i in range(200))


# -- the command -----------------------------------------------------------------------------------


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    hostfile = tmp_path / "fleet.hostfile"
    cmd = [sys.executable, "-m", "aurora_swarm.testing", "--endpoints", "3"]
    cmd += ["--hostfile", str(hostfile), "--model", "cli-model", "--slow", "1:3.0", "--chat-batch"]
    cmd += ["--no-metrics"]
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        while not hostfile.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the fleet never wrote its hostfile"
            time.sleep(0.05)
        endpoints = parse_hostfile(hostfile)
        assert len(endpoints) == 3
        assert all(e.tags["model"] == "cli-model" for e in endpoints)
        with httpx2.Client(timeout=5) as c:
            assert c.get(endpoints[2].url + "/health").status_code == 200
            assert c.get(endpoints[2].url + "/metrics").status_code == 404
            body = {"messages": [user("hi")]}
            reply = c.post(endpoints[1].base_url + "/chat/completions/batch", json=body)
            assert reply.json()["choices"][0]["message"]["content"] == "ECHO: hi"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert err == ""
    (line,) = out.splitlines()
    assert "3 endpoints" in line
    assert str(hostfile) in line
    from aurora_swarm.testing._cli import port_list

    assert f" {port_list([e.port for e in endpoints])} " in line  # its real ports
    assert not hostfile.exists()  # removed when the fleet stopped


def test_the_banner_lists_real_ports() -> None:
    from aurora_swarm.testing._cli import port_list

    assert port_list([8000]) == "port 8000"
    assert port_list([8002, 8000, 8001, 8003]) == "ports 8000-8003"
    assert port_list([41517, 41003, 41518]) == "ports 41003, 41517-41518"
    assert port_list(list(range(1, 40, 2)), shown=3) == "ports 1, 3, 5, and 17 more"


def test_cli_rejects_bad_arguments() -> None:
    from aurora_swarm.testing._cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--endpoints", "2", "--hostfile", "x", "--slow", "zero:3"])
    assert exc.value.code == 2
    assert main(["--endpoints", "2", "--hostfile", "x", "--slow", "5:3.0"]) == 2
