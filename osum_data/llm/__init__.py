"""The LLM layer (DESIGN section 7): one client for any OpenAI-compatible endpoint, with a cache,
validation, batch files and accounting; an embedded local server; quality filters for LLM text."""

from osum_data.llm.accounting import LLMStats
from osum_data.llm.client import LLMClient, LLMEndpointError, LLMRequest, LLMResult
from osum_data.llm.endpoint import resolve_endpoint
from osum_data.llm.server import EmbeddedServerError, Endpoint, embedded_server
from osum_data.llm.settings import LLMSettings, load_llm_settings

__all__ = [
    "EmbeddedServerError",
    "Endpoint",
    "LLMClient",
    "LLMEndpointError",
    "LLMRequest",
    "LLMResult",
    "LLMSettings",
    "LLMStats",
    "embedded_server",
    "load_llm_settings",
    "resolve_endpoint",
]
