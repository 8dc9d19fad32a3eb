"""EmbeddingPool against the fake fleet's /v1/embeddings, on loopback."""

from __future__ import annotations

import pytest

from aurora_swarm import ConfigurationError, EmbeddingPool, Endpoint
from aurora_swarm._transport import place_embeddings
from aurora_swarm.patterns import scatter_gather_embeddings
from aurora_swarm.testing import EndpointBehavior, FakeFleet, expected_embedding


async def test_every_text_gets_its_own_vector_in_few_requests() -> None:
    texts = [f"text {i} on topic {i % 37}" for i in range(2000)]
    behaviors = [EndpointBehavior(shuffle_choices=True)] * 4
    async with FakeFleet(4, behaviors=behaviors) as fleet:
        async with EmbeddingPool(fleet.endpoints, fleet.model) as pool:
            out = await scatter_gather_embeddings(pool, texts)
            stats = pool.stats()
        requests = [fleet.counters(k).requests.get("/v1/embeddings", 0) for k in range(4)]
        shuffled = [fleet.counters(k).faults.get("shuffle", 0) for k in range(4)]
    assert [r.embedding for r in out] == [expected_embedding(t) for t in texts]
    assert all(r.success and r.endpoint is not None for r in out)
    assert max(requests) <= 8, requests
    assert shuffled == requests  # every answer came back shuffled
    # Every request counted reached the fleet, except one called off first (taken back, or a
    # backup that lost the race before it was sent).
    assert 0 <= stats.requests - sum(requests) <= stats.taken_back + stats.backups


async def test_failed_requests_move_to_other_endpoints() -> None:
    behaviors = {0: EndpointBehavior(script=("503", "503")), 1: EndpointBehavior(die_after=0)}
    texts = [f"t{i}" for i in range(50)]
    async with FakeFleet(3, behaviors=behaviors) as fleet:
        async with EmbeddingPool(fleet.endpoints, fleet.model) as pool:
            out = await pool.embed_all(texts)
    assert [r.embedding for r in out] == [expected_embedding(t) for t in texts]


async def test_embed_one_and_sub_pools() -> None:
    async with FakeFleet(3) as fleet:
        tagged = [Endpoint(e.host, e.port, {"role": "embed" if k != 1 else "llm"})
                  for k, e in enumerate(fleet.endpoints)]
        async with EmbeddingPool(tagged, fleet.model) as pool:
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


async def test_wrong_model_fails_every_text_with_the_reason() -> None:
    async with FakeFleet(2) as fleet:
        async with EmbeddingPool(fleet.endpoints, "no-such-model") as pool:
            out = await pool.embed_all(["a", "b"])
    assert not any(r.success for r in out)
    assert all("does not exist" in (r.error or "") for r in out)


def test_vectors_are_placed_by_index() -> None:
    endpoint = Endpoint("h", 1)
    raw = [{"index": 1, "embedding": [1, 2]}, {"index": 0, "embedding": [3.5]},
           {"index": 1, "embedding": [0]}, {"index": 3, "embedding": "x"}]
    placed = place_embeddings(raw, 4, endpoint)
    assert getattr(placed[0], "embedding", None) == [3.5]
    assert "more than once" in str(placed[1])
    assert "no embedding with index 2" in str(placed[2])
    assert "not a list of numbers" in str(placed[3])
