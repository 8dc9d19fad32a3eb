"""The one retry layer: what to retry, how long to wait, when to stop.

:class:`RetryPolicy` is a small frozen value. It builds tenacity strategies, and the same
strategies drive both retry paths:

* :meth:`VLLMPool.post <aurora_swarm.VLLMPool.post>` retries one request on its agent with
  :class:`tenacity.AsyncRetrying`;
* batched dispatch moves a failed chunk to another endpoint at once and rests the failing
  endpoint for :meth:`RetryPolicy.backoff` seconds, counting attempts per prompt.
"""

from __future__ import annotations

from ._config import RetryPolicy

__all__ = ["RetryPolicy"]
