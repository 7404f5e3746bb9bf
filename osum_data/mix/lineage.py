"""What a cut is made of: its source keys (lineage), its speaker, and the signature of its audio.

Two cuts that share a source key share audio: a recording, a clip mixed into a composite, the long
recording a segment was cut from, the cut an augmented copy was made from, the prompts a joined
recording was built of. The mix groups cuts by these keys (and by speaker) so that nothing shared
crosses train <-> dev/test in any task, and `osum-data audit` checks the same keys.

Keys are strings in two namespaces:

- `id:<name>`: a cut or recording id (corpus cut ids are their recording ids; a derived cut names its
  source by cut id, so one namespace lets `source_cut_id` meet the source's recording);
- `src:<path or URL>`: an audio file a recording reads (the same file imported twice under two ids).

They are read from what the stages record (no audio is opened): the recording, `source_cut_id`,
`augment.source_cut_id`, `composite.{speech,event}_cut_id`/`event_recording_id`, and the explicit
`custom.lineage` list that stages keep along a chain of derivations (`lineage_record`). Noise and
room impulse responses mixed in by augmentation are not lineage: they are not the sample's content.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

ID, SRC = "id:", "src:"


def _as_dict(cut: Any) -> dict[str, Any]:
    """A manifest line as it is, or a lhotse Cut as its dict."""
    return cut if isinstance(cut, dict) else cut.to_dict()


def _rec(d: dict[str, Any]) -> dict[str, Any]:
    rec = d.get("recording")
    return rec if isinstance(rec, dict) else {}


def _derived_audio(custom: dict[str, Any]) -> bool:
    """True for a cut whose audio a stage wrote anew (an augmented copy, a composite): its own file is
    private to it and says nothing about what it shares."""
    return bool(custom.get("augment") or custom.get("composite"))


def own_keys(d: dict[str, Any]) -> set[str]:
    """The keys of the cut itself: its (source) id, its recording id and, unless a stage wrote the
    audio anew, the files the recording reads."""
    custom = d.get("custom") or {}
    keys: set[str] = set()
    mix = custom.get("mix") if isinstance(custom.get("mix"), dict) else {}
    own = mix.get("source_id") or d.get("id")  # in a mix, ids carry their dataset prefix
    if isinstance(own, str) and own:
        keys.add(ID + own)
    rec = _rec(d)
    if isinstance(rec.get("id"), str) and rec["id"]:
        keys.add(ID + rec["id"])
    if not _derived_audio(custom):
        for s in rec.get("sources") or []:
            if isinstance(s, dict) and s.get("type") in ("file", "url") and isinstance(s.get("source"), str):
                keys.add(SRC + s["source"])
    return keys


def lineage(cut: Any) -> set[str]:
    """Every source key of a cut (a lhotse Cut or its manifest dict)."""
    d = _as_dict(cut)
    custom = d.get("custom") or {}
    keys = own_keys(d)
    for k in custom.get("lineage") or []:
        if isinstance(k, str) and k:
            keys.add(k)
    for value in (
        custom.get("source_cut_id"),
        (custom.get("augment") or {}).get("source_cut_id")
        if isinstance(custom.get("augment"), dict)
        else None,
    ):
        if isinstance(value, str) and value:
            keys.add(ID + value)
    comp = custom.get("composite")
    if isinstance(comp, dict):
        for field in ("speech_cut_id", "event_cut_id", "event_recording_id"):
            if isinstance(comp.get(field), str) and comp[field]:
                keys.add(ID + comp[field])
    return keys


def lineage_record(cut: Any) -> list[str]:
    """What a stage stores in `custom.lineage` of a cut it derives from `cut`: the source's whole
    lineage, so the chain survives further derivations (each of which overwrites `source_cut_id`)."""
    return sorted(lineage(cut))


def speaker(cut: Any) -> str | None:
    """The speaker of the cut's first supervision, when known."""
    d = _as_dict(cut)
    sups = d.get("supervisions") or []
    spk = sups[0].get("speaker") if sups and isinstance(sups[0], dict) else None
    return spk.strip() if isinstance(spk, str) and spk.strip() else None


def key_hash(key: str) -> int:
    """64-bit hash of a key: what the mix keeps per key (8 bytes, whatever the key's length)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")


def audio_signature(cut: Any) -> str:
    """What identifies a cut's audio across runs without reading it: for audio a stage wrote (an
    augmented copy, a composite) the recorded recipe (source lineage, parameters, seeds); otherwise the
    recording, the span and the channel. Two runs that made the same augmented copy of the same cut
    with the same seed give the same signature, though their files differ."""
    d = _as_dict(cut)
    custom = d.get("custom") or {}
    if _derived_audio(custom):
        parts: list[Any] = [
            "derived",
            sorted(k for k in lineage(d) if not k.startswith(SRC)),
            custom.get("augment"),
            custom.get("composite"),
            custom.get("segment"),
        ]
    else:
        rec = _rec(d)
        sources = sorted(
            s.get("source") for s in rec.get("sources") or [] if isinstance(s, dict) and s.get("source")
        )
        parts = ["recording", rec.get("id"), sources, custom.get("segment")]
    parts += [round(float(d.get("start") or 0.0), 3), round(float(d.get("duration") or 0.0), 3)]
    parts.append(d.get("channel"))
    return json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)


def sample_key(cut: Any) -> int:
    """64-bit key of a task sample: same audio, same task key, same target -> same sample."""
    d = _as_dict(cut)
    custom = d.get("custom") or {}
    text = json.dumps([audio_signature(d), custom.get("task"), custom.get("target")], ensure_ascii=False)
    return key_hash(text)
