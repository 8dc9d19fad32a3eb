"""VLLMPool's calls against an in-process fake fleet, on asyncio and trio."""

from __future__ import annotations

import pytest

from aurora_swarm import (
    BadResponseError,
    ConfigurationError,
    Endpoint,
    PoolClosedError,
    PromptError,
    Response,
    Usage,
    VLLMPool,
)
from aurora_swarm._transport import place_choices
from aurora_swarm.testing import EndpointBehavior, FakeFleet, expected_answer

from .conftest import BOTH_BACKENDS, MODEL, fleet_of

anyio_backend = BOTH_BACKENDS


async def test_post_is_one_chat_completion(pool: VLLMPool, fleet: FakeFleet) -> None:
    response = await pool.post(2, "hello there world")
    assert response.success and response.error is None
    assert response.text == "ECHO: hello there world"
    assert response.agent_index == 2
    assert response.endpoint == fleet.endpoints[2]
    assert response.finish_reason == "stop"
    assert isinstance(response.usage, Usage) and response.usage.completion_tokens == 4
    assert response.latency > 0 and response.attempts == 1
    counters = fleet.counters(2)
    assert counters.chat_requests == 1 and counters.completion_requests == 0


async def test_post_batch_is_exactly_one_request(pool: VLLMPool, fleet: FakeFleet) -> None:
    prompts = [f"prompt {i} " + "x " * i for i in range(40)]
    out = await pool.post_batch(1, prompts)
    assert [r.text for r in out] == [expected_answer(p, 64)[0] for p in prompts]
    assert fleet.total_requests() == 1
    assert fleet.counters(1).completion_requests == 1
    assert fleet.counters(1).prompts_received == 40
    assert {r.agent_index for r in out} == {1}


async def test_post_batch_places_choices_by_index() -> None:
    async with fleet_of(1, behaviors={0: EndpointBehavior(shuffle_choices=True)}) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport, model=MODEL) as pool:
            prompts = [f"p{i}" for i in range(64)]
            out = await pool.post_batch(0, prompts)
    assert [r.text for r in out] == [f"ECHO: p{i}" for i in range(64)]


@pytest.mark.parametrize(("action", "failed"), [("partial", [4]), ("dup", [0, 4])])
async def test_post_batch_bad_choices_fail_exactly_the_affected_prompts(
    action: str, failed: list[int]
) -> None:
    async with fleet_of(1, behaviors={0: EndpointBehavior(script=(action,))}) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport, model=MODEL) as pool:
            out = await pool.post_batch(0, [f"p{i}" for i in range(5)])
    assert [i for i, r in enumerate(out) if not r.success] == failed
    for i, r in enumerate(out):
        if r.success:
            assert r.text == f"ECHO: p{i}"
        else:
            assert isinstance(r.exception, BadResponseError)
            assert "index" in (r.error or "")


def test_place_choices_table() -> None:
    endpoint = Endpoint("h", 1)
    raw = [
        {"index": 2, "text": "c", "finish_reason": "stop"},
        {"index": 0, "text": "a", "finish_reason": "length"},
        {"index": 7, "text": "out of range"},
        {"index": "1", "text": "not an int"},
        {"index": 3, "text": "d"},
        {"index": 3, "text": "d again"},
    ]
    placed = place_choices(raw, 4, endpoint)
    assert [getattr(c, "text", None) for c in placed] == ["a", None, "c", None]
    assert "no choice with index 1" in str(placed[1])
    assert "appears more than once" in str(placed[3])
    with pytest.raises(BadResponseError, match="no 'choices' list"):
        place_choices(None, 1, endpoint)


async def test_send_all_is_one_request_per_prompt_round_robin(
    pool: VLLMPool, fleet: FakeFleet
) -> None:
    prompts = [f"q{i}" for i in range(20)]
    out = await pool.send_all(prompts)
    assert [r.text for r in out] == [f"ECHO: q{i}" for i in range(20)]
    assert [r.agent_index for r in out] == [i % 4 for i in range(20)]
    assert fleet.total_requests() == 20
    assert [fleet.counters(k).chat_requests for k in range(4)] == [5, 5, 5, 5]


async def test_send_all_batched_uses_few_requests_and_keeps_order(
    pool: VLLMPool, fleet: FakeFleet
) -> None:
    prompts = [f"item {i}" for i in range(1000)]
    out = await pool.send_all_batched(prompts)
    assert [r.text for r in out] == [f"ECHO: item {i}" for i in range(1000)]
    assert all(r.success for r in out)
    assert fleet.total_requests() <= 4 * 8
    assert fleet.totals().chat_requests == 0
    # Every request counted reached the fleet, except one called off first (taken back, or a
    # backup that lost the race before it was sent).
    stats = pool.stats()
    assert 0 <= stats.requests - fleet.total_requests() <= stats.taken_back + stats.backups


@pytest.mark.parametrize("count", [10, 103])
async def test_send_all_batched_on_a_fresh_even_fleet_is_the_earlier_round_robin(
        fleet: FakeFleet, count: int) -> None:
    # Prompt i goes to agent i % size, as in the earlier system, when the plan is an even split.
    async with VLLMPool(fleet.endpoints, model=MODEL, transport=fleet.transport) as fresh:
        out = await fresh.send_all_batched([f"task-{i}" for i in range(count)])
    assert [r.text for r in out] == [f"ECHO: task-{i}" for i in range(count)]
    assert [r.agent_index for r in out] == [i % len(fleet.endpoints) for i in range(count)]


async def test_use_batch_false_behaves_as_send_all(fleet: FakeFleet) -> None:
    async with VLLMPool(fleet.endpoints, transport=fleet.transport,
                        model=MODEL, use_batch=False) as pool:
        out = await pool.send_all_batched([f"q{i}" for i in range(12)])
    assert [r.text for r in out] == [f"ECHO: q{i}" for i in range(12)]
    assert fleet.totals().chat_requests == 12 and fleet.totals().completion_requests == 0


async def test_empty_prompt_list(pool: VLLMPool, fleet: FakeFleet) -> None:
    assert await pool.send_all_batched([]) == []
    assert await pool.send_all([]) == []
    assert await pool.post_batch(0, []) == []
    assert fleet.total_requests() == 0


async def test_broadcast_prompt_reaches_every_agent(pool: VLLMPool, fleet: FakeFleet) -> None:
    out = await pool.broadcast_prompt("same question")
    assert [r.agent_index for r in out] == [0, 1, 2, 3]
    assert {r.text for r in out} == {"ECHO: same question"}
    assert [fleet.counters(k).chat_requests for k in range(4)] == [1, 1, 1, 1]


async def test_sub_pools_share_connections_limits_and_stats(fleet: FakeFleet) -> None:
    tagged = [Endpoint(e.host, e.port, {"role": "critic" if k % 2 else "worker"})
              for k, e in enumerate(fleet.endpoints)]
    async with VLLMPool(tagged, model=MODEL, transport=fleet.transport) as pool:
        critics = pool.by_tag("role", "critic")
        assert [e.port for e in critics.endpoints] == [fleet.endpoints[k].port for k in (1, 3)]
        assert pool.select([3, 0]).endpoints == (tagged[3], tagged[0])
        assert pool.slice(1, 3).endpoints == tuple(tagged[1:3])
        assert len(pool.sample(3, seed=1)) == 3
        assert critics._core is pool._core  # one connection pool, one limiter
        await critics.send_all_batched(["a", "b", "c"])
        assert pool.stats().requests == critics.stats().requests >= 1
        assert fleet.counters(0).completion_requests == fleet.counters(2).completion_requests == 0
        await critics.aclose()  # a sub-pool leaves the shared connections open
        assert (await pool.post(0, "still open")).success
    with pytest.raises(PoolClosedError):
        await critics.post(0, "closed with its parent")


async def test_sub_pool_errors(pool: VLLMPool) -> None:
    with pytest.raises(ConfigurationError, match="agent index 9 is out of range"):
        pool.select([0, 9])
    with pytest.raises(ConfigurationError, match=r"sample\(-1\)"):
        pool.sample(-1)
    assert pool.sample(5).size == 4  # at most every endpoint, as the earlier system did


async def test_empty_selections_are_empty_pools(pool: VLLMPool) -> None:
    for empty in (pool.by_tag("role", "x"), pool.slice(4), pool.select([]), pool.sample(0)):
        assert empty.size == 0 and await empty.send_all_batched([]) == []
        assert await empty.broadcast_prompt("x") == []
        for call in (empty.send_all_batched, empty.send_all):
            with pytest.raises(ConfigurationError, match="no endpoints"):
                await call(["x"])
        with pytest.raises(ConfigurationError, match="out of range"):
            await empty.post(0, "x")


async def test_stats_count_requests_prompts_tokens(pool: VLLMPool) -> None:
    await pool.send_all_batched([f"a b {i}" for i in range(100)])
    await pool.post(0, "one more")
    stats = pool.stats()
    assert stats.requests == stats.batch_requests + 1
    assert stats.prompts == 101 and stats.answered == 101
    assert stats.completion_tokens > 0 and stats.tokens > stats.completion_tokens
    assert stats.latency_p50 is not None and stats.latency_p99 is not None
    assert stats.latency_p50 <= stats.latency_p99
    before = pool.stats()
    await pool.post(1, "delta")
    assert (pool.stats() - before).requests == 1


async def test_pool_accepts_strings_and_urls(fleet: FakeFleet) -> None:
    specs = [str(fleet.endpoints[0]), fleet.endpoints[1].base_url]
    async with VLLMPool(specs, model=MODEL, transport=fleet.transport) as pool:
        assert pool.endpoints == tuple(fleet.endpoints[:2])
        assert (await pool.post(1, "via url")).text == "ECHO: via url"


# -- bad arguments raise at once, naming the problem ------------------------------------------


def test_empty_endpoint_list() -> None:
    with pytest.raises(ConfigurationError, match="endpoints is empty"):
        VLLMPool([], model=MODEL)


def test_bad_endpoint_item_names_its_position() -> None:
    with pytest.raises(ConfigurationError, match=r"endpoints\[1\]"):
        VLLMPool(["h:1", 42], model=MODEL)  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match=r"endpoints\[0\]: cannot read endpoint"):
        VLLMPool(["nonsense"], model=MODEL)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": ""}, "model must be a non-empty string"),
        ({"model": MODEL, "max_tokens": 0}, "max_tokens must be a positive int"),
        ({"model": MODEL, "max_concurrency": 0}, "max_concurrency must be >= 1"),
        ({"model": MODEL, "sampling": {"prompt": "x"}}, "sampling may not set"),
    ],
)
def test_bad_pool_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        VLLMPool(["h:1"], **kwargs)  # type: ignore[arg-type]


async def test_unknown_agent_index(pool: VLLMPool) -> None:
    with pytest.raises(ConfigurationError, match=r"agent index 4 is out of range.*\(0\.\.3\)"):
        await pool.post(4, "x")
    with pytest.raises(ConfigurationError, match="agent index -1 is out of range"):
        await pool.post_batch(-1, ["x"])
    with pytest.raises(ConfigurationError, match="agent index must be an int"):
        await pool.post("0", "x")  # type: ignore[arg-type]


async def test_non_string_prompt_names_its_index(pool: VLLMPool, fleet: FakeFleet) -> None:
    with pytest.raises(PromptError, match="prompt 2: must be a str, got int") as info:
        await pool.send_all_batched(["a", "b", 3, "d"])  # type: ignore[list-item]
    assert info.value.index == 2
    with pytest.raises(PromptError, match="prompt 1: must be a str, got NoneType"):
        await pool.post_batch(0, ["a", None])  # type: ignore[list-item]
    with pytest.raises(PromptError, match=r"must be a str or a non-empty list .* got bytes"):
        await pool.post(0, b"raw")  # type: ignore[arg-type]
    with pytest.raises(PromptError, match="not one string"):
        await pool.send_all("abc")
    assert fleet.total_requests() == 0  # nothing was sent


async def test_bad_max_tokens_argument(pool: VLLMPool) -> None:
    with pytest.raises(ConfigurationError, match="max_tokens must be a positive int, got -5"):
        await pool.send_all_batched(["a"], max_tokens=-5)


async def test_use_after_close(fleet: FakeFleet) -> None:
    pool = VLLMPool(fleet.endpoints, transport=fleet.transport, model=MODEL)
    await pool.aclose()
    await pool.aclose()  # idempotent
    for call in (pool.post(0, "x"), pool.post_batch(0, ["x"]), pool.send_all_batched(["x"]),
                 pool.send_all(["x"]), pool.broadcast_prompt("x")):
        with pytest.raises(PoolClosedError, match="closed"):
            await call
    with pytest.raises(PoolClosedError):
        async with pool:
            pass


async def test_unserved_model_lists_what_is_served(fleet: FakeFleet) -> None:
    async with VLLMPool(fleet.endpoints, transport=fleet.transport, model="no-such-model") as pool:
        with pytest.raises(ConfigurationError, match="serves: 'fake-model'"):
            await pool.send_all_batched(["x"])


# -- max_tokens sized from the model's context ------------------------------------------------


async def test_max_tokens_sized_from_context_never_above_cap() -> None:
    async with fleet_of(2, max_model_len=64) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport,
                            model=MODEL, max_tokens=16) as pool:
            info = await pool.model_info()
            assert info is not None and info.max_model_len == 64
            long_prompt = " ".join(["w"] * 40)   # 40 words = 41 tokens with BOS; room 23
            out = await pool.send_all_batched(["short", long_prompt])
    assert all(r.success for r in out)
    assert out[0].finish_reason == "stop"
    # the answer echoes 41 words; the budget was min(cap 16, 64 - 41) = 16 words
    assert len(out[1].text.split()) == 16 and out[1].finish_reason == "length"
    assert fleet.totals().rejected == 0


@pytest.mark.parametrize(("buffer", "expected"), [
    # The fake server echoes the prompt's words until the budget: 41 words at most for the first.
    (None, [41, 187, 128, 49]),  # the default 512: shorter answers, never below 128 or the room
    (0, [41, 501, 199, 49]),     # all the room the context leaves, up to the cap
])
async def test_the_buffer_shortens_answers_near_the_limit_but_never_refuses(
        buffer: int | None, expected: list[int]) -> None:
    # Context 1,200 tokens; prompts of 40, 500, 1,000 and 1,150 words (one token more each,
    # with BOS) leave 1,159, 699, 199 and 49 tokens for the answer.
    prompts = [" ".join(["w"] * n) for n in (40, 500, 1000, 1150)]
    async with fleet_of(1, max_model_len=1200) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport, model=MODEL,
                            max_tokens=512, buffer=buffer) as pool:
            assert pool.buffer == (512 if buffer is None else buffer)
            out = await pool.send_all_batched(prompts)
    assert all(r.success for r in out), [r.error for r in out]
    assert [len(r.text.split()) for r in out] == expected
    assert fleet.totals().rejected == 0


async def test_prompt_that_cannot_fit_gets_a_clear_error_not_a_400() -> None:
    async with fleet_of(2, max_model_len=32) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport,
                            model=MODEL, max_tokens=8) as pool:
            too_long = " ".join(["w"] * 40)
            out = await pool.send_all_batched(["fine", too_long, "also fine"])
            single = await pool.post(0, too_long)
    assert [r.success for r in out] == [True, False, True]
    assert isinstance(out[1].exception, PromptError)
    assert "prompt 1: is exactly 41 tokens long; the model's context is 32 tokens" in str(
        out[1].error)
    assert not single.success and isinstance(single.exception, PromptError)
    assert fleet.totals().rejected == 0  # the server never saw a request it would refuse


async def test_a_chat_prompt_that_fits_only_without_its_template_is_refused_here() -> None:
    # 61 words: 62 tokens as a completion prompt, but the chat template adds 4 a message on the
    # fake server (65 > 64). Counted with the template's allowance, it fails before it is sent.
    async with fleet_of(1, max_model_len=64) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport,
                            model=MODEL, max_tokens=8) as pool:
            too_long = await pool.post(0, " ".join(["w"] * 61))
            fits = await pool.send_all([" ".join(["w"] * 40)])
    assert not too_long.success and isinstance(too_long.exception, PromptError)
    assert "the model's context is 64 tokens" in str(too_long.error)
    assert fits[0].success, fits[0].error
    assert fleet.totals().rejected == 0  # the server never saw a request it would refuse


async def test_explicit_max_tokens_is_sent_as_given(pool: VLLMPool) -> None:
    out = await pool.send_all_batched(["one two three four five"], max_tokens=2)
    assert out[0].text == "ECHO: one" and out[0].finish_reason == "length"


def test_response_failure_carries_typed_error() -> None:
    exc = BadResponseError("bad", endpoint=Endpoint("h", 1))
    response = Response.failure(exc, agent_index=3, attempts=2)
    assert not response.success and response.text == ""
    assert response.exception is exc and response.endpoint == Endpoint("h", 1)
    assert response.error == "h:1: bad"


async def test_per_call_sampling_is_merged_and_checked(pool: VLLMPool) -> None:
    out = await pool.send_all_batched(["a b"], sampling={"temperature": 0.0, "seed": 3})
    assert out[0].text == "ECHO: a b"
    one = await pool.post(0, "c", sampling={"top_p": 0.9})
    assert one.success
    with pytest.raises(ConfigurationError, match=r"sampling may not set \['max_tokens'\]"):
        await pool.send_all_batched(["a"], sampling={"max_tokens": 3})
    with pytest.raises(ConfigurationError, match=r"sampling may not set \['stream'\]"):
        await pool.post(0, "a", sampling={"stream": True})
    assert pool.chat_template is None and pool.system_prompt is None


@pytest.mark.parametrize(("sampling", "message"), [
    ({"temperature": "hot"}, r"sampling temperature must be a number >= 0, got 'hot'"),
    ({"temperature": -0.5}, r"temperature must be a number >= 0"),
    ({"top_p": 0}, r"top_p must be a number in \(0, 1\], got 0"),
    ({"presence_penalty": 3}, r"presence_penalty must be a number in \[-2, 2\]"),
    ({"seed": 1.5}, r"seed must be an integer, got 1.5"),
    ({"seed": True}, r"seed must be an integer, got True"),
    ({"stop": ["a", 1]}, r"stop must be a string or a list of strings"),
    ({"top_k": -2}, r"top_k must be an integer >= -1"),
])
def test_sampling_values_are_checked_against_the_request_schema(
    sampling: dict[str, object], message: str,
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        VLLMPool(["127.0.0.1:9"], model=MODEL, sampling=sampling)


def test_sampling_fields_outside_the_schema_pass() -> None:
    VLLMPool(["127.0.0.1:9"], model=MODEL,
             sampling={"temperature": 0, "top_p": 1, "stop": "\n", "seed": 3,
                       "guided_json": {"type": "object"}, "min_tokens": 2})


async def test_call_options_are_keyword_only_except_the_earlier_max_tokens(
    pool: VLLMPool, fleet: FakeFleet
) -> None:
    """``max_tokens`` stays positional where the earlier system took it so; elsewhere every
    per-call option is keyword-only."""
    short = expected_answer("a b c", 2)[0]
    assert (await pool.post(0, "a b c", 2)).text == short
    assert [r.text for r in await pool.post_batch(0, ["a b c"], 2)] == [short]
    assert [r.text for r in await pool.send_all_batched(["a b c"], 2)] == [short]
    with pytest.raises(TypeError):
        await pool.send_all(["a"], 2)  # type: ignore[misc]
    with pytest.raises(TypeError):
        await pool.broadcast_prompt("a", 2)  # type: ignore[misc]
    assert [r.text for r in await pool.send_all(["a b c"], max_tokens=2)] == [short]
