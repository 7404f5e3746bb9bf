"""Which endpoint a run talks to, decided once in the driver (Ray workers get the resolved URL).

In the order every OpenAI client uses: `llm.base_url` (from the pipeline YAML or `--set`), then
`OPENAI_BASE_URL`; with neither, `OPENAI_API_KEY` alone means OpenAI itself; with nothing at all, the
embedded local server is started for the duration of the `with` block.

Either way the endpoint must answer one real chat completion first (`probe.check_endpoint`; the
embedded server does it as part of its start): a configured endpoint that cannot answer is one line
naming it, the cause and the fix, before any shard is touched. `llm.self_test: false` skips it for a
configured endpoint (a re-run answered from the cache while the endpoint is gone); with
`llm.batch_dir` nothing is sent, so nothing is tested.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from osum_data.llm.probe import EndpointCheckFailed, check_endpoint, describe_failure
from osum_data.llm.server import Endpoint, embedded_server
from osum_data.llm.settings import LLMSettings, api_key
from osum_data.yaml_config import ConfigError


@contextlib.contextmanager
def resolve_endpoint(settings: LLMSettings) -> Iterator[LLMSettings]:
    """Yield `settings` with `base_url` and `model` filled in (starting the embedded server if needed).
    Pass the yielded settings to `LLMClient` in the workers."""
    endpoint = configured_endpoint(settings)
    if endpoint is not None:
        if settings.self_test and settings.batch_dir is None:
            self_test_endpoint(endpoint.base_url, endpoint.model, settings.timeout_s)
        yield settings.model_copy(update={"base_url": endpoint.base_url, "model": endpoint.model})
        return
    with embedded_server(settings.embedded) as endpoint:
        yield settings.model_copy(update={"base_url": endpoint.base_url, "model": endpoint.model})


def configured_endpoint(settings: LLMSettings) -> Endpoint | None:
    """The endpoint the user configured, or None when the embedded server should be used."""
    base_url = settings.env_base_url()
    if base_url is None and api_key() is None:
        if settings.model:
            raise ConfigError(
                f"llm.model={settings.model!r} is set but no endpoint is: add --set llm.base_url=URL "
                "(or OPENAI_BASE_URL), or unset llm.model to use the embedded local server"
            )
        return None
    model = settings.env_model()
    if not model:
        where = base_url or "OpenAI (OPENAI_API_KEY is set)"
        raise ConfigError(
            f"llm.model: an endpoint is configured ({where}) but no model; --set llm.model=NAME"
        )
    return Endpoint(base_url=base_url, model=model)


def self_test_endpoint(base_url: str | None, model: str, timeout_s: float) -> None:
    """The start-up self-test of a configured endpoint; raises LLMEndpointError (one line)."""
    from osum_data.llm.client import LLMEndpointError

    try:
        check_endpoint(base_url, model, timeout_s=timeout_s)
    except EndpointCheckFailed as e:
        raise LLMEndpointError(describe_failure(base_url, model, e)) from None
