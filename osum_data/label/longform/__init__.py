"""Long-form segmentation: recordings longer than a training utterance -> derived segment cuts.

Stages: `segment_vad` (silero-vad), `diarize` (pyannote.audio), `segments_import` (RTTM / STM).
Importing this package registers them (osum_data/builtin_stages.py names it).
"""

from osum_data.label.longform import diarize, segments, vad  # noqa: F401  (registers the stages)
