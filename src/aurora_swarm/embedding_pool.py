"""The embedding pool under the earlier module name: ``EmbeddingPool``, ``EmbeddingResponse``."""

from ._embedding_pool import EmbeddingPool, EmbeddingResponse

__all__ = ["EmbeddingPool", "EmbeddingResponse"]
