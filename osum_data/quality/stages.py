"""Importing this module registers every quality stage (the one name run/stage.py lists)."""

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
