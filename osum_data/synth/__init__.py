"""TTS backends for LLM-written persona speech (DESIGN section 6): espeak-ng, flite, piper and any
OpenAI-compatible speech server, behind one interface; the persona source stage, the LLM utterance
stage and the `tts` stage (import `osum_data.synth.personas` and `osum_data.synth.tts_stage`)."""

from osum_data.synth.backends import BACKENDS, Prosody, Synthesis, TTSBackend, TTSError, make_backend

__all__ = ["BACKENDS", "Prosody", "Synthesis", "TTSBackend", "TTSError", "make_backend"]
