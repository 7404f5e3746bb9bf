"""How one sample becomes an LLM token sequence, and how samples become a padded batch.

    train:   [prefix = (chat header +) instruction] [speech x S] [suffix] [target] [eos] [pad ...]
    decode:  [pad ...] [prefix] [speech x S] [suffix]                      (left-padded; generation follows)

Labels are -100 everywhere except on the target tokens and the eos, so the instruction and the
speech carry no loss. Speech positions hold a placeholder id; the model scatters the speech
embeddings into them. With `chat_template` the instruction and speech form the user turn and the
target the assistant turn of the tokenizer's own template (the eos is then its end-of-turn token).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from osum_data.errors import UsageError

IGNORE = -100
SPEECH_MARK = "<|osum_speech|>"


@dataclass
class Sample:
    prefix: list[int]
    speech_len: int
    suffix: list[int]
    target: list[int]  # includes the eos


class PromptFormat:
    def __init__(
        self,
        tokenizer: Any,
        chat_template: bool = False,
        system_prompt: str | None = None,
        eos_token: str | None = None,
    ):
        self.tok = tokenizer
        self.chat = chat_template
        self.system = system_prompt
        self.eos_id = (
            tokenizer.eos_token_id if eos_token is None else self.token_id(eos_token, "data.eos_token")
        )
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        if chat_template and not getattr(tokenizer, "chat_template", None):
            raise UsageError("data.chat_template is on but the tokenizer has no chat template")
        self._cache: dict[str, tuple[list[int], list[int]]] = {}

    def token_id(self, token: str, what: str) -> int:
        """The id of a single token of the vocabulary (special tokens included)."""
        ids = self.tok(token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise UsageError(f"{what}: {token!r} is not one token of the tokenizer (it splits into {ids})")
        return ids[0]

    def stop_ids(self, extra: list[str], model_eos: int | list[int] | None = None) -> list[int]:
        """Ids that end generation: the target's end token, the LLM's own end tokens, `extra`."""
        own = [model_eos] if isinstance(model_eos, int) else list(model_eos or [])
        ids = [self.eos_id, *own, *(self.token_id(t, "decode.stop_tokens") for t in extra)]
        return list(dict.fromkeys(ids))

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"] if text else []

    def around_speech(self, instruction: str) -> tuple[list[int], list[int]]:
        """Token ids before and after the speech for this instruction (cached: pools are small)."""
        if instruction not in self._cache:
            if self.chat:
                msgs = [{"role": "system", "content": self.system}] if self.system else []
                msgs.append({"role": "user", "content": instruction + SPEECH_MARK})
                text = self.tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
                before, after = text.split(SPEECH_MARK)
            else:
                before, after = instruction, ""
            self._cache[instruction] = (self.encode(before), self.encode(after))
        return self._cache[instruction]

    def sample(self, instruction: str, speech_len: int, target: str | None) -> Sample:
        prefix, suffix = self.around_speech(instruction)
        tgt = [] if target is None else self.encode(target) + [self.eos_id]
        return Sample(prefix, speech_len, suffix, tgt)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True).strip()


def collate_tokens(samples: list[Sample], pad_id: int, left_pad: bool = False) -> dict[str, torch.Tensor]:
    """input_ids, speech_mask, attention_mask, labels, each (B, L)."""
    rows = []
    for s in samples:
        ids = s.prefix + [pad_id] * s.speech_len + s.suffix + s.target
        speech = [0] * len(s.prefix) + [1] * s.speech_len + [0] * (len(s.suffix) + len(s.target))
        labels = [IGNORE] * (len(ids) - len(s.target)) + s.target
        rows.append((ids, speech, labels))
    length = max(len(r[0]) for r in rows)
    out = {
        "input_ids": torch.full((len(rows), length), pad_id, dtype=torch.long),
        "speech_mask": torch.zeros((len(rows), length), dtype=torch.bool),
        "attention_mask": torch.zeros((len(rows), length), dtype=torch.long),
        "labels": torch.full((len(rows), length), IGNORE, dtype=torch.long),
    }
    for i, (ids, speech, labels) in enumerate(rows):
        n = len(ids)
        sl = slice(length - n, length) if left_pad else slice(0, n)
        out["input_ids"][i, sl] = torch.tensor(ids)
        out["speech_mask"][i, sl] = torch.tensor(speech, dtype=torch.bool)
        out["attention_mask"][i, sl] = 1
        out["labels"][i, sl] = torch.tensor(labels)
    return out


def prompt_format(cfg: Any, tokenizer: Any) -> PromptFormat:
    """The PromptFormat a Config asks for."""
    d = cfg.data
    return PromptFormat(tokenizer, d.chat_template, d.system_prompt, d.eos_token)
