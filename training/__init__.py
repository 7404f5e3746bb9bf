"""The bundled trainer (DESIGN section 8): Whisper encoder + adapter + causal LM with LoRA.

config.py          the YAML config (strict pydantic sections, --set overrides)
weights.py         weights and tokenizers from local paths / GGUF files only
features.py        Whisper log-mel at the cut's own length, SpecAugment (WeNet's draws, spec-sub)
sequence.py        token layout of a sample ([instruction][speech][target eos]) and padding
stream.py          training inputs (manifests, Shar, URLs), deterministic mixing, resumable positions
data.py            cut filters, bucketed batches with positions, the dataset and loaders
adapters.py        the default adapter and OSUM's adapter
model.py           short-input Whisper encoder, SpeechLLM (generate via transformers), build_model
distributed.py     torchrun: process group, DDP / FSDP2, sums across ranks
stats.py           training statistics, one all_reduce per logged step
safe_load.py       torch files from untrusted places: tensors and plain data only
checkpoint.py      exact/fast-resume checkpoints, LoRA-merged export
osum_checkpoint.py OSUM's released checkpoint -> our weights
evaluate.py        dev loss and generation metrics during training
logs.py            train_log.jsonl, TensorBoard, W&B
flops.py           useful FLOPs per part and GPU peaks (MFU)
train.py           the loop (`osum-train`)
decode.py          batched decoding (`osum-decode`); metrics.py per-task metrics
export.py          `osum-export`
cli_errors.py      how every trainer command ends (one line, the OsumError's exit code)
"""
