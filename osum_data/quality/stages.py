"""Importing this module registers every quality stage (the one name run/stage.py lists)."""

from osum_data.quality import bandwidth, clipping, dnsmos, duplicates, filters, snr, speech_ratio  # noqa: F401
