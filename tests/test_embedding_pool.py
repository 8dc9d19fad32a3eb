"""EmbeddingPool on the in-process fake fleet, under a mocked ``openai.AsyncOpenAI`` as the
earlier system's tests mock it, and once on loopback; vector placement as a pure function."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock, MagicMock, patch

import httpx2
import pytest

from aurora_swarm import (
    BadResponseError,
    ConfigurationError,
    EmbeddingPool,
    Endpoint,
    HTTPStatusError,
)
from aurora_swarm._transport import Transport, place_embeddings
from aurora_swarm.hostfile import AgentEndpoint
from aurora_swarm.patterns import scatter_gather_embeddings
from aurora_swarm.testing import EndpointBehavior, FakeFleet, expected_embedding

from .conftest import BOTH_BACKENDS, FAST_RETRY, fleet_of

anyio_backend = BOTH_BACKENDS

ONE_TEXT = EndpointBehavior(list_inputs=False)  # answers a list with its first text's vector


async def test_every_text_gets_its_own_vector_in_few_requests() -> None:
    texts = [f"text {i} on topic {i % 37}" for i in range(2000)]
    behaviors = [EndpointBehavior(shuffle_choices=True)] * 4
    async with fleet_of(4, behaviors=behaviors) as fleet:
        async with EmbeddingPool(fleet.endpoints, fleet.model,
                                 transport=fleet.transport) as pool:
            out = await scatter_gather_embeddings(pool, texts)
            stats = pool.stats()
            capabilities = pool.capabilities()
        requests = [fleet.counters(k).requests.get("/v1/embeddings", 0) for k in range(4)]
        shuffled = [fleet.counters(k).faults.get("shuffle", 0) for k in range(4)]
    assert [r.embedding for r in out] == [expected_embedding(t) for t in texts]
    assert all(r.success and r.endpoint is not None for r in out)
    assert max(requests) <= 8, requests
    assert shuffled == requests  # every answer came back shuffled
    # Every request counted reached the fleet, except one called off first (taken back, or a
    # backup that lost the race before it was sent).
    assert 0 <= stats.requests - sum(requests) <= stats.taken_back + stats.backups
    assert all(c.list_prompts is True for c in capabilities.values())
    assert stats.single_requests == 0


async def test_failed_requests_move_to_other_endpoints() -> None:
    behaviors = {0: EndpointBehavior(script=("503", "503")), 1: EndpointBehavior(die_after=0)}
    texts = [f"t{i}" for i in range(50)]
    async with fleet_of(3, behaviors=behaviors) as fleet:
        async with EmbeddingPool(fleet.endpoints, fleet.model,
                                 transport=fleet.transport) as pool:
            out = await pool.embed_all(texts)
    assert [r.embedding for r in out] == [expected_embedding(t) for t in texts]


async def test_embed_one_and_sub_pools() -> None:
    async with fleet_of(3) as fleet:
        tagged = [Endpoint(e.host, e.port, {"role": "embed" if k != 1 else "llm"})
                  for k, e in enumerate(fleet.endpoints)]
        async with EmbeddingPool(tagged, fleet.model, transport=fleet.transport) as pool:
            sub = pool.by_tag("role", "embed")
            assert sub.size == 2 and pool.select([2, 0]).endpoints == (tagged[2], tagged[0])
            assert pool.slice(1, 3).size == 2 and pool.sample(10).size == 3
            one = await sub.embed_one(1, "hello")
            assert one.success and one.agent_index == 1 and one.endpoint == tagged[2]
            assert one.embedding == expected_embedding("hello")
            bad = await pool.embed_one(99, "x")
            assert not bad.success and bad.embedding is None and "Invalid" in (bad.error or "")
            assert await pool.embed_all([]) == []
            with pytest.raises(ConfigurationError, match="no endpoints"):
                await pool.by_tag("role", "none").embed_all(["x"])
            with pytest.raises(ConfigurationError, match="not one string"):
                await pool.embed_all("abc")
        assert fleet.counters(1).requests.get("/v1/embeddings", 0) == 0


async def test_embed_one_sends_a_string_which_a_one_text_server_takes() -> None:
    refuses = EndpointBehavior(list_inputs=False, list_input_status=400)
    async with fleet_of(1, behaviors=[refuses]) as fleet:
        async with EmbeddingPool(fleet.endpoints, fleet.model,
                                 transport=fleet.transport) as pool:
            one = await pool.embed_one(0, "hello")
        seen = fleet.counters(0)
    assert one.success and one.embedding == expected_embedding("hello") and one.attempts == 1
    assert seen.rejected == 0


async def test_embed_one_counts_in_stats_as_post_does() -> None:
    # The first endpoint answers; the second fails its first request (503), then answers the
    # retry: stats() shows each request, the retry and the failure's cause.
    flaky = EndpointBehavior(fail_first=1, fail_status=503)
    async with fleet_of(2, behaviors=[EndpointBehavior(), flaky]) as fleet:
        async with EmbeddingPool(fleet.endpoints, fleet.model, transport=fleet.transport,
                                 retry=FAST_RETRY) as pool:
            first = await pool.embed_one(0, "hello")
            second = await pool.embed_one(1, "again")
            stats = pool.stats()
    assert first.success and second.success and second.attempts == 2
    assert [(e.requests, e.prompts, e.answered, e.retries) for e in stats.endpoints] == [
        (1, 1, 1, 0), (2, 2, 1, 1)]
    assert stats.batch_requests == 0
    assert sum(stats.failures.values()) == 1


async def test_wrong_model_fails_every_text_with_the_reason() -> None:
    async with fleet_of(2) as fleet:
        async with EmbeddingPool(fleet.endpoints, "no-such-model",
                                 transport=fleet.transport) as pool:
            out = await pool.embed_all(["a", "b"])
    assert not any(r.success for r in out)
    assert all("does not exist" in (r.error or "") for r in out)


def test_pool_arguments_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="fallback_concurrency"):
        EmbeddingPool(["h:1"], "m", fallback_concurrency=0)
    with pytest.raises(ConfigurationError, match="transport"):
        EmbeddingPool(["h:1"], "m", transport=object())  # type: ignore[arg-type]


# -- placing vectors -------------------------------------------------------------------------


def test_vectors_are_placed_by_index() -> None:
    endpoint = Endpoint("h", 1)
    raw = [{"index": 1, "embedding": [1, 2]}, {"index": 0, "embedding": [3.5]},
           {"index": 1, "embedding": [0]}, {"index": 3, "embedding": "x"}]
    placed = place_embeddings(raw, 4, endpoint)
    assert getattr(placed[0], "embedding", None) == [3.5]
    assert "more than once" in str(placed[1])
    assert "no embedding with index 2" in str(placed[2])
    assert "not a list of numbers" in str(placed[3])


def test_typed_items_are_placed_by_index_and_any_sequence_of_numbers_is_a_vector() -> None:
    endpoint = Endpoint("h", 1)
    items = [SimpleNamespace(index=1, embedding=(1.0, 2)), SimpleNamespace(index=0,
             embedding=[0.5]), SimpleNamespace(index=2, embedding=[True, 1.0])]
    placed = place_embeddings(items, 3, endpoint)
    assert [getattr(p, "embedding", None) for p in placed[:2]] == [[0.5], [1.0, 2.0]]
    assert "not a list of numbers" in str(placed[2])  # a bool is not a number here


@pytest.mark.parametrize("item", [
    lambda k: SimpleNamespace(embedding=[float(k)]),  # no index at all
    lambda k: MagicMock(embedding=[float(k)]),  # a mock's index is no int
    lambda k: {"embedding": [float(k)], "index": None},
])
def test_vectors_without_index_are_read_in_order_when_one_a_text(
    item: Callable[[int], Any],
) -> None:
    endpoint = Endpoint("h", 1)
    placed = place_embeddings([item(k) for k in range(3)], 3, endpoint)
    assert [getattr(p, "embedding", None) for p in placed] == [[0.0], [1.0], [2.0]]
    short = place_embeddings([item(k) for k in range(2)], 3, endpoint)
    assert all(isinstance(p, BadResponseError) for p in short)
    assert "2 embeddings carry no index, for 3 inputs" in str(short[0])


def test_items_missing_an_index_among_indexed_ones_fail_alone() -> None:
    endpoint = Endpoint("h", 1)
    items = [{"index": 1, "embedding": [1.0]}, {"embedding": [9.0]}]
    placed = place_embeddings(items, 2, endpoint)
    assert "no embedding with index 0" in str(placed[0])
    assert getattr(placed[1], "embedding", None) == [1.0]


# -- servers that embed one text a request ---------------------------------------------------


async def test_the_fake_one_text_server_answers_a_list_with_its_first_vector() -> None:
    behaviors = [ONE_TEXT, EndpointBehavior(list_inputs=False, list_input_status=422)]
    async with fleet_of(2, behaviors=behaviors) as fleet:
        async with httpx2.AsyncClient(transport=fleet.transport) as http:
            short, refusing = (e.base_url + "/embeddings" for e in fleet.endpoints)
            listed = await http.post(short, json={"model": fleet.model, "input": ["a", "b"]})
            single = await http.post(short, json={"model": fleet.model, "input": "b"})
            refused = await http.post(refusing, json={"model": fleet.model, "input": ["a"]})
            answered = await http.post(refusing, json={"model": fleet.model, "input": "a"})
        seen, strict = fleet.counters(0), fleet.counters(1)
    assert [(d["index"], d["embedding"]) for d in listed.json()["data"]] == [
        (0, expected_embedding("a"))]
    assert single.json()["data"][0]["embedding"] == expected_embedding("b")
    assert refused.status_code == 422 and "one string input" in refused.text
    assert answered.json()["data"][0]["embedding"] == expected_embedding("a")
    assert (seen.prompts_received, seen.choices_returned, seen.rejected) == (2, 2, 0)
    assert (strict.prompts_received, strict.rejected) == (1, 1)
    with pytest.raises(ValueError, match="status"):
        EndpointBehavior(list_inputs=False, list_input_status=200)


async def test_a_short_answer_sends_the_texts_one_a_request_on_the_same_endpoint() -> None:
    texts = [f"text {k}" for k in range(300)]
    async with fleet_of(3, behaviors=[ONE_TEXT, ONE_TEXT, EndpointBehavior()]) as fleet:
        async with EmbeddingPool(fleet.endpoints, fleet.model, retry=FAST_RETRY,
                                 transport=fleet.transport) as pool:
            sub = pool.select([1])  # made before anything is known: it shares what is learnt
            out = await pool.embed_all(texts)
            stats = pool.stats()
            capabilities = pool.capabilities()
            assert sub.capabilities()[fleet.endpoints[1]].list_prompts is False
            seen = [fleet.counters(k) for k in range(3)]
            fleet.reset_counters()
            again = await sub.embed_all(texts[:40])
            sub_stats = sub.stats()
        after = fleet.counters(1)
    assert [r.embedding for r in out] == [expected_embedding(t) for t in texts]
    assert all(r.success and r.endpoint == fleet.endpoints[r.agent_index] for r in out)
    assert [capabilities[e].list_prompts for e in fleet.endpoints] == [False, False, True]
    slack = stats.taken_back + stats.backups  # requests called off before they were sent
    for row, server in zip(stats.endpoints[:2], seen[:2], strict=True):
        # Every request is counted, as it reached the server: the lists that came back short
        # (those in flight before the endpoint was known), then one a text.
        assert 0 <= row.requests - server.requests["/v1/embeddings"] <= slack
        assert 0 < row.batch_requests <= 8 and row.single_requests >= row.answered
        # One text embedded a request: the first of each list, then every text alone.
        assert server.prompts_received == server.requests["/v1/embeddings"]
    assert stats.endpoints[2].single_requests == 0
    # A sub-pool knows at once: no list goes to the endpoint, only strings.
    assert [r.embedding for r in again] == [expected_embedding(t) for t in texts[:40]]
    assert all(r.agent_index == 0 and r.endpoint == fleet.endpoints[1] for r in again)
    assert after.requests["/v1/embeddings"] == after.prompts_received == 40
    assert sub_stats.endpoints[0].batch_requests == stats.endpoints[1].batch_requests
    assert sub_stats.endpoints[0].single_requests == stats.endpoints[1].single_requests + 40


async def test_a_short_answer_of_a_server_that_takes_lists_does_not_mark_it() -> None:
    # A vLLM server whose first answer lost a vector (a passing fault) still takes lists: a
    # second list of two gets two vectors, so only the lost text goes again.
    texts = [f"text {k}" for k in range(50)]
    async with fleet_of(1, behaviors=[EndpointBehavior(script=("partial",))]) as fleet:
        async with EmbeddingPool(fleet.endpoints, fleet.model, retry=FAST_RETRY,
                                 transport=fleet.transport) as pool:
            out = await pool.embed_all(texts)
            more = await pool.embed_all(texts[:10])
            capabilities = pool.capabilities()
            stats = pool.stats()
    assert [r.embedding for r in out + more] == [expected_embedding(t) for t in texts + texts[:10]]
    assert capabilities[fleet.endpoints[0]].list_prompts is True
    assert stats.endpoints[0].single_requests == 0
    # the short list, the check of two, the lost text again, then one list
    assert fleet.counters(0).requests["/v1/embeddings"] == stats.endpoints[0].requests == 4


@pytest.mark.parametrize("status", [400, 404, 405, 422])
async def test_a_refused_list_sends_the_texts_one_a_request(status: int) -> None:
    refuses = EndpointBehavior(list_inputs=False, list_input_status=status)
    texts = [f"p {k}" for k in range(50)]
    async with fleet_of(2, behaviors=[refuses] * 2) as fleet:
        async with EmbeddingPool(fleet.endpoints, fleet.model, transport=fleet.transport) as pool:
            out = await pool.embed_all(texts)
            capabilities = pool.capabilities()
            stats = pool.stats()
        totals = fleet.totals()
    assert [r.embedding for r in out] == [expected_embedding(t) for t in texts]
    assert all(c.list_prompts is False for c in capabilities.values())
    # The refused lists and every request after them, one text each, are counted.
    assert totals.requests["/v1/embeddings"] - totals.rejected == totals.prompts_received
    assert totals.rejected <= stats.batch_requests
    assert 0 <= stats.requests - totals.requests["/v1/embeddings"] <= (
        stats.taken_back + stats.backups)


async def test_a_bad_first_text_is_a_bad_text_not_a_missing_feature() -> None:
    texts = ["word " * 5000, "fine"]  # the first is longer than the context
    async with fleet_of(1) as fleet:
        async with EmbeddingPool(fleet.endpoints, fleet.model, retry=FAST_RETRY,
                                 transport=fleet.transport) as pool:
            out = await pool.embed_all(texts)
            capabilities = pool.capabilities()[fleet.endpoints[0]]
    assert [r.success for r in out] == [False, True]
    assert isinstance(out[0].exception, HTTPStatusError)
    assert "maximum context length" in (out[0].error or "")
    assert capabilities.list_prompts is not False


# -- the earlier system's tests mock openai.AsyncOpenAI ----------------------------------------


def _earlier_mock_client(agent_index: int) -> MagicMock:
    """A client as the earlier system's tests make it: ONE vector a call, whatever the input,
    items without a usable index, and ``create`` takes ``model`` and ``input`` only."""
    client = MagicMock()

    async def create(model: Any = None, input: Any = None) -> MagicMock:
        return MagicMock(data=[MagicMock(embedding=[float(agent_index), 0.0, 0.0])])

    client.embeddings.create = AsyncMock(side_effect=create)
    return client


async def test_code_and_mocks_of_the_earlier_system_run_unchanged() -> None:
    endpoints = [AgentEndpoint(host="127.0.0.1", port=8000 + i) for i in range(4)]
    clients = [_earlier_mock_client(i) for i in range(4)]
    texts = ["a", "b", "c", "d", "e", "f"]
    with patch("openai.AsyncOpenAI") as mock_openai:
        mock_openai.side_effect = clients
        pool = EmbeddingPool(endpoints, model="test-model", concurrency=8, timeout=10.0)
        results = await pool.embed_all(texts)
        one = await pool.embed_one(2, "x")
        capabilities = pool.capabilities()
        await pool.close()
    assert len(results) == len(texts)
    for text, r in zip(texts, results, strict=True):
        assert r.success and r.embedding == [float(r.agent_index), 0.0, 0.0], r
        # The text went, alone, to the client of the endpoint that answered it.
        calls = clients[r.agent_index].embeddings.create.await_args_list
        assert any(c.kwargs["input"] in (text, [text]) for c in calls), (text, calls)
    # Every text of a list that came back with one vector went out again alone: to the same
    # client, or, where that list was a backup cancelled once the first endpoint answered, to
    # the client that answered it.
    sent_alone = {c.kwargs["input"] for client in clients
                  for c in client.embeddings.create.await_args_list
                  if isinstance(c.kwargs["input"], str)}
    for k, client in enumerate(clients):
        for call in client.embeddings.create.await_args_list:
            assert set(call.kwargs) == {"model", "input"} and call.kwargs["model"] == "test-model"
            listed = call.kwargs["input"]
            if isinstance(listed, list) and len(listed) > 1:  # came back with one vector
                assert capabilities[endpoints[k]].list_prompts is False
                assert set(listed) <= sent_alone, (k, listed, sent_alone)
    assert one.success and one.agent_index == 2 and one.embedding == [2.0, 0.0, 0.0]


async def test_the_transport_sends_model_and_input_only() -> None:
    client = _earlier_mock_client(0)
    transport = Transport(api_key="k", connect_timeout=1.0, max_connections=1)
    endpoint = Endpoint("h", 1)
    with patch("openai.AsyncOpenAI", side_effect=[client]):
        reply = await transport.embeddings(endpoint, ["a"], {"model": "m", "user": "u"}, 5.0)
        choice, usage = await transport.embedding(endpoint, "b", {"model": "m"}, None)
    await transport.aclose()
    assert [getattr(c, "embedding", None) for c in reply.choices] == [[0.0, 0.0, 0.0]]
    assert reply.items == 1 and reply.usage is None and usage is None
    assert choice.embedding == [0.0, 0.0, 0.0]
    assert [c.kwargs for c in client.embeddings.create.await_args_list] == [
        {"model": "m", "input": ["a"]}, {"model": "m", "input": "b"}]


async def test_index_less_vectors_one_a_text_are_read_in_order() -> None:
    def client(agent_index: int) -> MagicMock:  # a list-taking server that leaves index out
        mock = MagicMock()

        async def create(model: Any = None, input: Any = None) -> MagicMock:
            texts = [input] if isinstance(input, str) else input
            return MagicMock(data=[MagicMock(embedding=[float(agent_index), float(len(t))])
                                   for t in texts])

        mock.embeddings.create = AsyncMock(side_effect=create)
        return mock

    texts = ["x" * k for k in range(1, 41)]
    with patch("openai.AsyncOpenAI") as mock_openai:
        mock_openai.side_effect = [client(i) for i in range(2)]
        async with EmbeddingPool([("h", 1), ("h", 2)], "m") as pool:
            out = await pool.embed_all(texts)
            capabilities = pool.capabilities()
            stats = pool.stats()
    assert [r.embedding for r in out] == [[float(r.agent_index), float(len(t))]
                                          for r, t in zip(out, texts, strict=True)]
    assert all(c.list_prompts is True for c in capabilities.values())
    assert stats.single_requests == 0


# -- on loopback -----------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # loopback servers run on asyncio
async def test_one_text_servers_on_loopback() -> None:
    texts = [f"text {k}" for k in range(60)]
    async with FakeFleet(2, behaviors=[ONE_TEXT] * 2) as fleet:
        async with EmbeddingPool(fleet.endpoints, fleet.model) as pool:
            out = await pool.embed_all(texts)
            capabilities = pool.capabilities()
    assert [r.embedding for r in out] == [expected_embedding(t) for t in texts]
    assert all(c.list_prompts is False for c in capabilities.values())
