"""The embedded server's generation engine: a causal LM on torch (CPU), micro-batched, with
JSON-schema-constrained decoding by llguidance.

Why torch rather than a native llama.cpp build: torch's CPU kernels pick their instruction set at
run time from what the operating system grants the process (a VM that reports AMX but does not
grant its tile state gets AVX-512 or AVX2 kernels), and the float32 weights never take the
AMX path at all; nothing is compiled at set-up (see docs/decisions.md, issue #15).

One `Engine` serves one model. `generate(jobs)` runs a batch of requests together: the prompts are
left-padded into one tensor, prefilled in one forward pass, then decoded a token per step for every
unfinished row, each row with its own sampling (temperature, top_p, seed, penalties), its own stop
strings and its own grammar matcher (the matcher masks the logits before sampling, so a row under a
schema can only ever emit text the schema accepts, and stops when the schema is complete).
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from osum_data.local_weights import gguf_model_dir, gguf_tokenizer_dir

# Used when a tokenizer carries no chat template (SmolLM2's GGUF does carry its own).
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# JSON as people write it on one line, no free whitespace: a small model left free to emit
# whitespace may fill max_tokens with it. `lenient`: keywords llguidance does not implement are
# ignored (the client validates every answer against the full schema anyway).
JSON_OPTIONS = {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False, "lenient": True}


# Weight formats of the linear layers: "int8" (dynamic int8 quantisation, fbgemm kernels) or "float32".
QUANTIZE = ("int8", "float32")


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with every `nn.Linear` replaced by a dynamically quantised int8 one (per-channel int8
    weights; activations quantised per call). Why: decoding a 135M model on a CPU reads every
    weight once per step, so it is bound by memory traffic, and int8 weights are a quarter of the
    float32 bytes: ~3x the tokens per second at batch 1 to 24 on one core (issue #15). The GGUF is
    4-bit already (Q4_1), so 8-bit weights keep what it holds. fbgemm picks AVX2/AVX-512/VNNI
    kernels at run time, like the float32 path (no AMX). torch marks `torch.ao.quantization`
    deprecated; it is pinned with torch in requirements.txt and tested (tests/test_llm_speed.py)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notes, once per process
        return torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
        )


def int8_supported() -> bool:
    """Whether this torch has an x86 int8 backend (fbgemm or its x86 successor)."""
    engines = set(torch.backends.quantized.supported_engines)
    return bool(engines & {"fbgemm", "x86"})


class GrammarError(ValueError):
    """A response_format schema llguidance cannot compile (the request is answered with HTTP 400)."""


@dataclass
class Job:
    """One chat request, ready to decode."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    grammar: str | None = None  # a compiled llguidance grammar (from `Engine.grammar`)


@dataclass
class Output:
    text: str
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int


class Engine:
    def __init__(self, gguf: Path, n_threads: int | None = None, n_ctx: int = 2048, quantize: str = "int8"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if quantize not in QUANTIZE:
            raise ValueError(f"quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")

        # Half the logical CPUs, as llama.cpp does (one per physical core, typically): a matmul split
        # over more threads than the cores it really gets waits at every barrier, and on a busy
        # machine two threads gave 3 tokens per CPU-second where one gave 40.
        torch.set_num_threads(n_threads or max(1, (os.cpu_count() or 2) // 2))
        self.n_ctx = n_ctx
        self.tokenizer = AutoTokenizer.from_pretrained(gguf_tokenizer_dir(gguf), local_files_only=True)
        if not self.tokenizer.chat_template:
            self.tokenizer.chat_template = CHATML
        self.model = AutoModelForCausalLM.from_pretrained(
            gguf_model_dir(gguf), local_files_only=True, dtype=torch.float32
        ).eval()
        self.vocab = self.model.get_output_embeddings().weight.shape[0]
        # int8 where torch has the kernels; otherwise float32, said in the log (`self.weights`).
        self.weights = "int8" if quantize == "int8" and int8_supported() else "float32"
        if self.weights == "int8":
            self.model = quantize_int8(self.model)
        eos = {self.tokenizer.eos_token_id}
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        eos |= set(gen_eos) if isinstance(gen_eos, list) else {gen_eos}
        self.eos = {t for t in eos if t is not None}
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        self._ll_tokenizer = None
        self._ll_lock = threading.Lock()
        self._tok_lock = threading.Lock()  # a fast tokenizer is not safe for concurrent use
        self._bit_shifts = torch.arange(32, dtype=torch.int32)

    # --- prompts and grammars ----------------------------------------------------------------

    def prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        with self._tok_lock:
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # a BatchEncoding in some versions
            ids = ids["input_ids"]
        return list(ids)

    @property
    def ll_tokenizer(self):
        with self._ll_lock:
            if self._ll_tokenizer is None:
                import llguidance.hf

                self._ll_tokenizer = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=self.vocab)
            return self._ll_tokenizer

    def grammar(self, schema: dict[str, Any]) -> str:
        """A JSON schema compiled for llguidance; raises GrammarError naming the problem."""
        import llguidance

        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=JSON_OPTIONS)
        except ValueError as e:
            raise GrammarError(f"unusable JSON schema: {e}") from None
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self.ll_tokenizer)
        if is_error:
            raise GrammarError(f"unusable JSON schema: {'; '.join(messages)}")
        return grammar

    # --- decoding ------------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, jobs: list[Job]) -> list[Output]:
        import llguidance

        n = len(jobs)
        width = max(len(j.prompt_ids) for j in jobs)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, j in enumerate(jobs):
            ids[i, width - len(j.prompt_ids) :] = torch.tensor(j.prompt_ids)
            mask[i, width - len(j.prompt_ids) :] = 1
        position = (mask.cumsum(-1) - 1).clamp(min=0)
        matchers = [
            llguidance.LLMatcher(self.ll_tokenizer, j.grammar, log_level=0) if j.grammar else None
            for j in jobs
        ]
        bitmask = torch.full((n, (self.vocab + 31) // 32), -1, dtype=torch.int32) if any(matchers) else None
        gens = [torch.Generator().manual_seed(j.seed if j.seed is not None else 0) for j in jobs]
        out_ids: list[list[int]] = [[] for _ in jobs]
        counts = [torch.zeros(self.vocab) for _ in jobs]
        finish: list[str | None] = [None] * n
        cut_at: list[int | None] = [None] * n  # text length where a stop string began

        from transformers import DynamicCache

        cache = DynamicCache()
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=position, past_key_values=cache, use_cache=True
        )
        logits = out.logits[:, -1, : self.vocab].float()
        next_position = position[:, -1:] + 1
        while True:
            if bitmask is not None:
                bitmask.fill_(-1)  # all allowed; rows under a grammar get theirs
                for i, m in enumerate(matchers):
                    if m is not None and finish[i] is None:
                        row = bitmask[i]
                        m.unsafe_compute_mask_ptr(row.data_ptr(), row.numel() * row.element_size())
                logits.masked_fill_(~self._allowed(bitmask), float("-inf"))
            chosen = torch.full((n, 1), self.pad_id, dtype=torch.long)
            for i, j in enumerate(jobs):
                if finish[i] is not None:
                    continue
                token = self._sample(logits[i], j, counts[i], gens[i])
                if token in self.eos:
                    finish[i] = "stop"
                    continue
                out_ids[i].append(token)
                counts[i][token] += 1
                m = matchers[i]
                if m is not None:
                    m.consume_token(token)
                    if m.is_error():
                        raise RuntimeError(f"grammar matcher failed: {m.get_error()}")
                    if m.is_stopped():
                        finish[i] = "stop"
                if j.stop and finish[i] is None:
                    text = self._decode(out_ids[i])
                    hits = [text.find(s) for s in j.stop if s and s in text]
                    if hits:
                        cut_at[i] = min(hits)
                        finish[i] = "stop"
                if finish[i] is None and len(out_ids[i]) >= j.max_tokens:
                    finish[i] = "length"
                chosen[i, 0] = token
            if all(f is not None for f in finish):
                break
            mask = torch.cat([mask, torch.ones((n, 1), dtype=torch.long)], dim=1)
            out = self.model(
                input_ids=chosen,
                attention_mask=mask,
                position_ids=next_position,
                past_key_values=cache,
                use_cache=True,
            )
            next_position = next_position + 1
            logits = out.logits[:, -1, : self.vocab].float()
        results = []
        for i, j in enumerate(jobs):
            text = self._decode(out_ids[i])
            if cut_at[i] is not None:
                text = text[: cut_at[i]]
            results.append(Output(text, finish[i] or "length", len(j.prompt_ids), len(out_ids[i])))
        return results

    def _allowed(self, bitmask: torch.Tensor) -> torch.Tensor:
        """(rows, vocab) booleans from llguidance's packed bitmask (bit j of word w: token 32w+j).
        Unpacked here rather than by llguidance.torch's helper, which is `torch.compile`d: on a CPU
        that means a C++ compiler at run time and seconds of compilation per new batch size."""
        bits = (bitmask.unsqueeze(-1) >> self._bit_shifts) & 1
        return bits.reshape(bitmask.shape[0], -1)[:, : self.vocab].bool()

    def _decode(self, ids: list[int]) -> str:
        with self._tok_lock:
            return self.tokenizer.decode(ids, skip_special_tokens=True)

    @staticmethod
    def _sample(row: torch.Tensor, job: Job, counts: torch.Tensor, gen: torch.Generator) -> int:
        if job.presence_penalty or job.frequency_penalty:
            row = row - job.frequency_penalty * counts - job.presence_penalty * (counts > 0).float()
        if job.temperature <= 0:
            return int(torch.argmax(row))
        probs = torch.softmax(row / job.temperature, dim=-1)
        if job.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_p, 0) - sorted_p < job.top_p  # always keeps the first
            filtered = torch.zeros_like(probs)
            filtered[order[keep]] = sorted_p[keep]
            probs = filtered
        return int(torch.multinomial(probs, 1, generator=gen))
