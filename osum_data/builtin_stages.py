"""The built-in stages: which module registers each one.

This one table is the registry of the stages the package ships. `pyproject.toml` declares the same
table as entry points of the group `osum_data.stages` (tests/test_stage_registry.py checks that they
agree, and that every stage the package defines is listed), so the engine (`osum_data.run`) names no
module of its own package, a pipeline YAML names none either, and a stage's module is imported only
when a pipeline uses it (importing every one would load torch and friends into each worker).
"""

from __future__ import annotations

# stage name -> the module whose import registers it
BUILTIN_STAGES: dict[str, str] = {
    "acoustic_attributes": "osum_data.label.acoustic",
    "add_reasoning": "osum_data.template.reasoning",
    "align_ctc": "osum_data.label.align",
    "align_import": "osum_data.label.align",
    "align_pocketsphinx": "osum_data.label.align",
    "align_whisper": "osum_data.label.align",
    "audio_policy": "osum_data.label.audio_check",
    "augment": "osum_data.augment.stage",
    "check_audio": "osum_data.label.audio_check",
    "diarize": "osum_data.label.longform",
    "event_composite": "osum_data.augment.composite",
    "export_hf": "osum_data.export.hf",
    "export_nemo": "osum_data.export.nemo",
    "export_osum": "osum_data.export.osum",
    "export_sharegpt": "osum_data.export.sharegpt",
    "filter_cps": "osum_data.label.filters",
    "filter_duration": "osum_data.label.filters",
    "llm_answer": "osum_data.label.chat",
    "llm_answerable": "osum_data.label.chat",
    "llm_persona_utterance": "osum_data.synth.personas",
    "llm_qa_open": "osum_data.template.qa",
    "llm_style": "osum_data.label.style",
    "model_label": "osum_data.label.models",
    "normalize_text": "osum_data.label.text_normalize",
    "personas": "osum_data.synth.personas",
    "qa_closed": "osum_data.template.qa",
    "segment_vad": "osum_data.label.longform",
    "segments_import": "osum_data.label.longform",
    "shar_write": "osum_data.export.shar",
    "template": "osum_data.template.builder",
    "transcribe_whisper": "osum_data.label.align",
    "tts": "osum_data.synth.tts_stage",
}
