"""aurora_swarm: drive a swarm of vLLM OpenAI-compatible servers from one script or notebook."""

import logging as _logging

from ._agent_pool import AgentPool
from ._capabilities import Capabilities
from ._chat_template import ChatTemplate
from ._config import POOL_DEFAULT, Chunking, HealthPolicy, PoolDefault, RetryPolicy, Timeouts
from ._embedding_pool import EmbeddingPool, EmbeddingResponse
from ._endpoint import AgentEndpoint, Endpoint, Tags
from ._exceptions import (
    BadResponseError,
    BatchError,
    ConfigurationError,
    ConnectError,
    EndpointUnavailable,
    HostfileError,
    HTTPStatusError,
    InputFileError,
    JobFileError,
    OverloadError,
    PoolClosedError,
    PromptError,
    RequestError,
    RequestTimeout,
    SwarmError,
)
from ._hostfile import parse_hostfile
from ._microbatch import BatcherStats, MicroBatcher
from ._pool import VLLMPool
from ._prompts import Conversation, Message, Prompt
from ._response import Response, Usage
from ._stats import EndpointStats, PoolStats
from ._transport import ModelInfo
from ._version import __version__

# A library logs, the application decides where it goes (see the "Logging" docs page).
_logging.getLogger(__name__).addHandler(_logging.NullHandler())

__all__ = [
    "POOL_DEFAULT",
    "AgentEndpoint",
    "AgentPool",
    "BadResponseError",
    "BatchError",
    "BatcherStats",
    "Capabilities",
    "ChatTemplate",
    "Chunking",
    "ConfigurationError",
    "ConnectError",
    "Conversation",
    "EmbeddingPool",
    "EmbeddingResponse",
    "Endpoint",
    "EndpointStats",
    "EndpointUnavailable",
    "HTTPStatusError",
    "HealthPolicy",
    "HostfileError",
    "InputFileError",
    "JobFileError",
    "Message",
    "MicroBatcher",
    "ModelInfo",
    "OverloadError",
    "PoolClosedError",
    "PoolDefault",
    "PoolStats",
    "Prompt",
    "PromptError",
    "RequestError",
    "RequestTimeout",
    "Response",
    "RetryPolicy",
    "SwarmError",
    "Tags",
    "Timeouts",
    "Usage",
    "VLLMPool",
    "__version__",
    "parse_hostfile",
]

from ._exports import own_exports  # noqa: E402

own_exports(__name__, globals(), __all__)
del own_exports
