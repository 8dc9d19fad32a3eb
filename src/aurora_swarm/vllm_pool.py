"""The vLLM pool under the earlier module name: :class:`VLLMPool`."""

from ._pool import VLLMPool
from ._response import Response

__all__ = ["Response", "VLLMPool"]
