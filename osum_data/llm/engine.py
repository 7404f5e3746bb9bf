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
from collections import OrderedDict
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


# A prompt head shared by a batch is computed once when it is at least this long, and the last
# MAX_HEADS such heads are kept (a stage has one or two templates; ~9 MB each at 200 tokens).
MIN_HEAD = 16
MAX_HEADS = 8

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


@dataclass
class _Row:
    """One request being decoded."""

    job: Job
    tag: Any
    matcher: Any  # an llguidance.LLMatcher, or None for free text
    gen: torch.Generator
    counts: torch.Tensor | None  # tokens emitted so far, by id (only for penalties)
    out_ids: list[int] = field(default_factory=list)
    finish: str | None = None
    cut_at: int | None = None  # text length where a stop string began


@dataclass
class Batch:
    """Rows decoded together: their KV cache (rows left-padded to one length), attention mask
    (0 over the padding), the position each row's next token takes, and each row's next-token
    logits."""

    rows: list[_Row]
    cache: Any  # a transformers DynamicCache
    mask: torch.Tensor
    next_position: torch.Tensor
    logits: torch.Tensor

    @property
    def size(self) -> int:
        return len(self.rows)

    def select(self, keep: list[int]) -> None:
        """Keep only the rows `keep`; columns that are padding in every remaining row go."""
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            return
        index = torch.tensor(keep)
        self.mask = self.mask[index]
        self.next_position = self.next_position[index]
        self.logits = self.logits[index]
        used = self.mask.any(0).nonzero()
        first = int(used[0]) if len(used) else 0
        self.mask = self.mask[:, first:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, first:]
            layer.values = layer.values[index, :, first:]

    def merge(self, other: Batch) -> None:
        """Take the rows of `other` (just started) into this batch: the shorter side is padded on
        the left (masked), so every row keeps its own positions."""
        width = max(self.mask.shape[1], other.mask.shape[1])

        def left_pad(t: torch.Tensor, dim: int) -> torch.Tensor:
            short = width - t.shape[dim]
            if not short:
                return t
            shape = list(t.shape)
            shape[dim] = short
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([left_pad(mine.keys, 2), left_pad(theirs.keys, 2)])
            mine.values = torch.cat([left_pad(mine.values, 2), left_pad(theirs.values, 2)])
        self.mask = torch.cat([left_pad(self.mask, 1), left_pad(other.mask, 1)])
        self.next_position = torch.cat([self.next_position, other.next_position])
        self.logits = torch.cat([self.logits, other.logits])
        self.rows += other.rows


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
        # Shared prompt heads already computed: their tokens -> per-layer (keys, values), one row.
        self._prefixes: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()

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

    def generate(self, jobs: list[Job]) -> list[Output]:
        """Decode `jobs` together to the end; their outputs in order."""
        batch = self.start(jobs, tags=list(range(len(jobs))))
        results: dict[int, Output] = {}
        while batch.size:
            results.update(self.step(batch))
        return [results[i] for i in range(len(jobs))]

    @torch.inference_mode()
    def start(self, jobs: list[Job], tags: list[Any]) -> Batch:
        """A batch of `jobs` with their prompts run through the model (`tags`: what the caller
        wants back with each finished output). Merge it into a running batch with `Batch.merge`."""
        from llguidance import LLMatcher

        cache, logits, mask, next_position = self._prefill([j.prompt_ids for j in jobs])
        rows = [
            _Row(
                job=j,
                tag=tag,
                matcher=LLMatcher(self.ll_tokenizer, j.grammar, log_level=0) if j.grammar else None,
                gen=torch.Generator().manual_seed(j.seed if j.seed is not None else 0),
                counts=torch.zeros(self.vocab) if j.presence_penalty or j.frequency_penalty else None,
            )
            for j, tag in zip(jobs, tags, strict=True)
        ]
        return Batch(rows, cache, mask, next_position, logits)

    @torch.inference_mode()
    def step(self, batch: Batch) -> list[tuple[Any, Output]]:
        """One token for every row of `batch`: the rows that finished leave it and come back as
        (tag, output); the others are run one position further. Between two steps the caller may
        merge new rows in (continuous batching): a row that finishes early makes room at once, so a
        long answer does not hold back the requests queued behind it."""
        n = batch.size
        logits = batch.logits
        if any(r.matcher is not None for r in batch.rows):
            bitmask = torch.full((n, (self.vocab + 31) // 32), -1, dtype=torch.int32)  # all allowed
            for i, r in enumerate(batch.rows):
                if r.matcher is not None:
                    row = bitmask[i]
                    r.matcher.unsafe_compute_mask_ptr(row.data_ptr(), row.numel() * row.element_size())
            logits = logits.masked_fill(~self._allowed(bitmask), float("-inf"))
        chosen = torch.full((n, 1), self.pad_id, dtype=torch.long)
        for i, r in enumerate(batch.rows):
            j = r.job
            token = self._sample(logits[i], j, r.counts, r.gen)
            if token in self.eos:
                r.finish = "stop"
                continue
            r.out_ids.append(token)
            if r.counts is not None:
                r.counts[token] += 1
            m = r.matcher
            if m is not None:
                m.consume_token(token)
                if m.is_error():
                    raise RuntimeError(f"grammar matcher failed: {m.get_error()}")
                if m.is_stopped():
                    r.finish = "stop"
            if j.stop and r.finish is None:
                text = self._decode(r.out_ids)
                hits = [text.find(s) for s in j.stop if s and s in text]
                if hits:
                    r.cut_at = min(hits)
                    r.finish = "stop"
            if r.finish is None and len(r.out_ids) >= j.max_tokens:
                r.finish = "length"
            chosen[i, 0] = token
        done = []
        for r in batch.rows:
            if r.finish is not None:
                text = self._decode(r.out_ids)
                if r.cut_at is not None:
                    text = text[: r.cut_at]
                done.append((r.tag, Output(text, r.finish, len(r.job.prompt_ids), len(r.out_ids))))
        if done:
            keep = [i for i, r in enumerate(batch.rows) if r.finish is None]
            batch.select(keep)
            chosen = chosen[keep]
        if batch.size:
            batch.mask = torch.cat([batch.mask, torch.ones((batch.size, 1), dtype=torch.long)], dim=1)
            out = self.model(
                input_ids=chosen,
                attention_mask=batch.mask,
                position_ids=batch.next_position,
                past_key_values=batch.cache,
                use_cache=True,
            )
            batch.next_position = batch.next_position + 1
            batch.logits = out.logits[:, -1, : self.vocab].float()
        return done

    def _prefill(self, prompts: list[list[int]]):
        """Run the prompts through the model: (KV cache, last-position logits, attention mask,
        next position ids). Prompts of one stage share a long head (system prompt, worked examples,
        instructions) and differ in a short tail (the utterance): the head is computed once, for
        one row, and kept (`_prefixes`, by its tokens) for the next batches; only the tails are
        run for every row, left-padded behind the shared head ([head | pads | tail]: the mask hides
        the pads, positions continue from the head). Prefill was most of the cost of a request:
        ~220 prompt tokens for ~10 answer tokens in the demo's SSR and STTC (issue #15)."""
        from transformers import DynamicCache

        n = len(prompts)
        head = self._shared_head(prompts)
        cache = DynamicCache()
        for layer, (k, v) in enumerate(head or ()):
            cache.update(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1), layer)
        shared = head[0][0].shape[-2] if head else 0  # the head's length in tokens
        tails = [p[shared:] for p in prompts]
        width = max(len(t) for t in tails)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        tail_mask = torch.zeros((n, width), dtype=torch.long)
        for i, t in enumerate(tails):
            ids[i, width - len(t) :] = torch.tensor(t)
            tail_mask[i, width - len(t) :] = 1
        position = shared + (tail_mask.cumsum(-1) - 1).clamp(min=0)
        mask = torch.cat([torch.ones((n, shared), dtype=torch.long), tail_mask], dim=1)
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=position, past_key_values=cache, use_cache=True
        )
        return cache, out.logits[:, -1, : self.vocab].float(), mask, position[:, -1:] + 1

    def _shared_head(self, prompts: list[list[int]]) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """The per-layer (keys, values) of the longest kept head that starts every prompt (leaving
        each at least one token of its own); else, for a batch of several prompts with a common
        head of MIN_HEAD tokens or more, that head, computed now and kept. None: no head to share."""
        limit = min(len(p) for p in prompts) - 1
        best: tuple[int, ...] | None = None
        for key in self._prefixes:
            if len(key) <= limit and (best is None or len(key) > len(best)):
                if all(tuple(p[: len(key)]) == key for p in prompts):
                    best = key
        if best is not None:
            self._prefixes.move_to_end(best)
            return self._prefixes[best]
        if len(prompts) < 2:
            return None
        common = 0
        first = prompts[0]
        while common < limit and all(p[common] == first[common] for p in prompts):
            common += 1
        if common < MIN_HEAD:
            return None
        from transformers import DynamicCache

        cache = DynamicCache()
        self.model(input_ids=torch.tensor([first[:common]]), past_key_values=cache, use_cache=True)
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        self._prefixes[tuple(first[:common])] = kv
        while len(self._prefixes) > MAX_HEADS:
            self._prefixes.popitem(last=False)
        return kv

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
