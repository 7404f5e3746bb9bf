"""RAVDESS (no lhotse recipe): 24 actors; every label is a code in the 7-part file name.

Layout: Actor_01 ... Actor_24/<modality>-<vocal channel>-<emotion>-<intensity>-<statement>-
<repetition>-<actor>.wav (audio-only downloads) or .mp4 (the audio-visual ones). The code tables are
in conventions.yaml: emotion 02 is "calm" (mapped in corpus_maps.yaml), statement 01/02 gives the
words, odd actors are male and even actors female. Video-only files (modality 02) have no audio track
and are rejected as such; full-AV .mp4 files are demuxed like MELD's. Song recordings (vocal channel
02) are kept, marked custom.vocal_channel = song, so a pipeline can leave sung speech out.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from osum_data.corpora.rejects import MALFORMED_LINE, NO_AUDIO_TRACK, UNKNOWN_LABEL
from osum_data.corpora.report import ImportReport
from osum_data.corpora.rows import Row, conventions, import_rows, relative
from osum_data.rejects import Reject

CORPUS = "ravdess"
_NAME = re.compile(r"(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)")
_FIELDS = ("modality", "vocal_channel", "emotion", "intensity", "statement")


def prepare_ravdess(corpus_dir: Path, out_dir: Path) -> ImportReport:
    root = Path(os.path.abspath(corpus_dir))
    files = sorted(
        (
            p
            for p in root.rglob("*")
            if p.suffix.lower() in (".wav", ".mp4") and p.parent.name.startswith("Actor_")
        ),
        key=lambda p: (p.parent.name, p.name),
    )
    if not files:
        raise FileNotFoundError(f"no RAVDESS Actor_*/NN-NN-NN-NN-NN-NN-NN.wav under {corpus_dir}")
    return import_rows(
        CORPUS, Path(out_dir), [(None, scan(root, files))], expected_labels=("gender", "emotion")
    )


def scan(root: Path, files: list[Path]) -> Iterator[Row]:
    codes = conventions(CORPUS)
    for path in files:
        source = relative(path, root)
        match = _NAME.fullmatch(path.stem)
        uid = path.stem  # unique: the modality code tells an .mp4 from a .wav of the same take
        if match is None:
            problem = Reject(
                MALFORMED_LINE, f"{path.name} is not a 7-part RAVDESS name (NN-NN-NN-NN-NN-NN-NN)"
            )
            yield Row(id=uid, source=source, audio=path, problem=problem)
            continue
        values, problem = {}, None
        for name, code in zip(_FIELDS, match.groups(), strict=False):
            values[name] = codes[name].get(code)
            if values[name] is None and problem is None:
                problem = Reject(UNKNOWN_LABEL, f"unknown RAVDESS {name} code {code!r} in {path.name}")
        if values["modality"] == "video-only":
            problem = problem or Reject(NO_AUDIO_TRACK, f"{path.name} is a video-only file (modality 02)")
        actor = int(match[7])
        parity = codes["gender_of_actor_parity"]["odd" if actor % 2 else "even"]
        yield Row(
            id=uid,
            source=source,
            audio=path,
            text=values["statement"],
            speaker=f"Actor_{actor:02d}",
            language="en",
            gender=parity,
            emotion=values["emotion"],
            custom={
                "intensity": values["intensity"],
                "vocal_channel": values["vocal_channel"],
                "repetition": int(match[6]),
            },
            problem=problem,
        )
