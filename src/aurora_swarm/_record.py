"""What a pool keeps about one endpoint, shared by every call and sub-pool of the pool."""

from __future__ import annotations

import anyio
import attrs

from ._endpoint import Endpoint
from ._health import Health
from ._server_model import ServerModel
from ._stats import Counters

__all__ = ["EndpointRecord"]


@attrs.define(eq=False)
class EndpointRecord:
    """Everything the pool tracks about one endpoint, shared by every call and sub-pool."""

    endpoint: Endpoint
    health: Health = attrs.field(factory=Health)
    server: ServerModel = attrs.field(factory=ServerModel)
    counters: Counters = attrs.field(factory=Counters)
    probing: bool = False
    scraping: bool = False  # a gauge reading of the server's load is under way
    history: anyio.Event | None = None  # set once /metrics was read for the server's past wave
