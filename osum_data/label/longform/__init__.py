"""Long-form segmentation: recordings longer than a training utterance -> derived segment cuts.

Stages: `segment_vad` (silero-vad), `diarize` (pyannote.audio), `segments_import` (RTTM / STM).
Importing this package registers them (named in the `osum_data.stages` entry points).
"""

from osum_data.label.longform import diarize, segments, vad  # noqa: F401  (registers the stages)
