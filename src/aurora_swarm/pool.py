"""The generic agent pool under the earlier module name: :class:`AgentPool`, :class:`Response`."""

from ._agent_pool import AgentPool
from ._response import Response

__all__ = ["AgentPool", "Response"]
