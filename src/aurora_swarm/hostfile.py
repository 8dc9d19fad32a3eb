"""Endpoints and hostfiles under the earlier module name: ``AgentEndpoint``, ``parse_hostfile``.

The same objects as :class:`aurora_swarm.Endpoint` (``AgentEndpoint`` is its alias) and
:func:`aurora_swarm.parse_hostfile`.
"""

from ._endpoint import AgentEndpoint, Endpoint
from ._hostfile import parse_hostfile

__all__ = ["AgentEndpoint", "Endpoint", "parse_hostfile"]
