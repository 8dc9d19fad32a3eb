"""Scatter/gather for embedding pools: :func:`scatter_gather_embeddings`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .._embedding_pool import EmbeddingResponse

__all__ = ["scatter_gather_embeddings"]


class _Embedder(Protocol):
    async def embed_all(self, texts: Sequence[str]) -> list[EmbeddingResponse]: ...


async def scatter_gather_embeddings(
    embed_pool: _Embedder, texts: Sequence[str]
) -> list[EmbeddingResponse]:
    """The vector of every text, batched over the pool; ``out[i]`` is ``texts[i]``'s.

    The same as :meth:`EmbeddingPool.embed_all <aurora_swarm.EmbeddingPool.embed_all>`, as a
    pattern that takes the pool first.
    """
    return await embed_pool.embed_all(texts)
