"""Which endpoint a run talks to, decided once in the driver (Ray workers get the resolved URL).

In the order every OpenAI client uses: `llm.base_url` (from the pipeline YAML or `--set`), then
`OPENAI_BASE_URL`; with neither, `OPENAI_API_KEY` alone means OpenAI itself; with nothing at all, the
embedded local server is started for the duration of the `with` block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from osum_data.llm.server import Endpoint, embedded_server
from osum_data.llm.settings import LLMSettings, api_key
from osum_data.yaml_config import ConfigError


@contextlib.contextmanager
def resolve_endpoint(settings: LLMSettings) -> Iterator[LLMSettings]:
    """Yield `settings` with `base_url` and `model` filled in (starting the embedded server if needed).
    Pass the yielded settings to `LLMClient` in the workers."""
    endpoint = configured_endpoint(settings)
    if endpoint is not None:
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
