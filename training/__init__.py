"""The bundled trainer (DESIGN section 8): Whisper encoder + adapter + causal LM with LoRA.

config.py      the YAML config (typed sections, strict keys, --set overrides)
weights.py     weights and tokenizers from local paths / GGUF files only
features.py    Whisper log-mel at the cut's own length, SpecAugment
sequence.py    token layout of a sample ([instruction][speech][target eos]) and padding
data.py        manifests/Shar -> task mixing -> bucketed batches with resumable positions
model.py       short-input Whisper encoder, adapter, SpeechLLM, build_model
distributed.py torchrun: DDP / FSDP2, stats across ranks
checkpoint.py  exact-resume checkpoints, LoRA-merged export
train.py       the loop (`osum-train`)
decode.py      batched greedy decoding (`osum-decode`); metrics.py per-task metrics
export.py      `osum-export`
demo.py        small task manifests from the demo corpus (tests, benchmarks, smoke runs)
"""
