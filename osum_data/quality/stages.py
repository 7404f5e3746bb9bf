"""Importing this module registers every quality stage (pyproject.toml names each one's module)."""

from osum_data.quality import (  # noqa: F401
    asr,
    bandwidth,
    clipping,
    dnsmos,
    duplicates,
    filters,
    language,
    snr,
    speech_ratio,
    text_checks,
)
