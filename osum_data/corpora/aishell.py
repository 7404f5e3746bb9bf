"""AISHELL-1: lhotse's recipe plus speaker gender from resource_aishell/speaker.info.

lhotse's prepare_aishell sets language "Chinese", the speaker (the wav's folder, "S0002") and the
text (upper-cased, spaces removed), but no gender: speaker.info is not read. It skips a wav with no
transcript line with a log warning, never notices transcript lines whose wav is absent (common when
not every speaker tarball under data_aishell/wav was unpacked), keeps the last of duplicated
transcript lines (silently), and crashes on a blank transcript line. We report the first three as rejects and
fail early, naming the line, on the last.
"""

from __future__ import annotations

import os
from pathlib import Path

from lhotse.recipes import prepare_aishell as lhotse_prepare_aishell
from lhotse.utils import fastcopy

from osum_data.corpora.labels import SupervisionLabels
from osum_data.corpora.recipe import Expected, assemble, run_recipe
from osum_data.corpora.rejects import DUPLICATE_ID, MISSING_AUDIO, NO_TRANSCRIPT
from osum_data.corpora.report import ImportReport
from osum_data.corpora.text import read_text
from osum_data.errors import UsageError
from osum_data.rejects import Reject

CORPUS = "aishell"
PARTS = ("train", "dev", "test")  # lhotse's recipe always processes these three
TRANSCRIPT = Path("data_aishell/transcript/aishell_transcript_v0.8.txt")


def prepare_aishell(corpus_dir: Path, out_dir: Path) -> ImportReport:
    """Import AISHELL-1 from CORPUS_DIR (holding data_aishell/ and resource_aishell/)."""
    root = locate(Path(os.path.abspath(corpus_dir)))  # lhotse stores paths as given
    speakers = read_speakers(root / "resource_aishell" / "speaker.info")
    expected = scan(root)
    manifests = run_recipe("prepare_aishell", lhotse_prepare_aishell, root, output_dir=None)

    def relabel(sup, part):
        labels = SupervisionLabels(CORPUS)
        try:
            labels.set_gender(speakers.get(sup.speaker or ""))
        except Reject as err:
            raise Reject(err.code, f"{err.detail} for speaker {sup.speaker} in speaker.info") from None
        return labels.apply(fastcopy(sup, language="zh"))

    present = {
        p: manifests[p] for p in PARTS if (root / "data_aishell" / "wav" / p).is_dir() and p in manifests
    }
    return assemble(CORPUS, Path(out_dir), expected, present, relabel, expected_labels=("gender",))


def locate(corpus_dir: Path) -> Path:
    """The directory holding data_aishell/ (CORPUS_DIR, or its parent if given data_aishell itself)."""
    for root in (corpus_dir, corpus_dir.parent):
        if (root / TRANSCRIPT).is_file():
            return root
    raise FileNotFoundError(f"no {TRANSCRIPT} under {corpus_dir}")


def read_speakers(path: Path) -> dict[str, str]:
    """Speaker folder name ("S0002") -> gender code, from speaker.info lines like `0002 F`."""
    if not path.is_file():
        return {}
    speakers = {}
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise UsageError(f"{path}:{lineno}: expected '<speaker> <gender>', got {line!r}")
        spk = fields[0] if fields[0].startswith("S") else f"S{fields[0]}"
        speakers[spk] = fields[1]
    return speakers


def scan(root: Path) -> list[Expected]:
    """Every wav under data_aishell/wav/<part>/ and every transcript line, as expected utterances."""
    transcript: dict[str, str] = {}
    entries = []
    for lineno, line in enumerate(read_text(root / TRANSCRIPT).splitlines(), start=1):
        source = f"{TRANSCRIPT}:{lineno}"
        fields = line.split(maxsplit=1)
        if not fields:
            raise UsageError(
                f"{root / TRANSCRIPT}:{lineno}: blank line; lhotse's prepare_aishell cannot parse it"
            )
        uid = fields[0]
        if uid in transcript:  # lhotse keeps the text of the last line: the earlier one is lost
            earlier = transcript[uid]
            problem = Reject(DUPLICATE_ID, f"utterance {uid!r} is listed again at line {lineno}, which wins")
            entries.append(Expected(uid, None, None, earlier, problem, claims_id=False))
        transcript[uid] = source
    wavs = {}
    for part in PARTS:
        for wav in sorted((root / "data_aishell" / "wav" / part).rglob("*.wav")):
            wavs[wav.stem] = wav
            where = str(wav.relative_to(root))
            problem = None
            if wav.stem not in transcript:
                problem = Reject(NO_TRANSCRIPT, f"{where} has no line in {TRANSCRIPT.name}")
            entries.append(Expected(wav.stem, part, wav, transcript.get(wav.stem, where), problem))
    for uid, source in transcript.items():
        if uid not in wavs:
            problem = Reject(MISSING_AUDIO, f"no {uid}.wav under data_aishell/wav/{{{','.join(PARTS)}}}")
            entries.append(Expected(uid, None, None, source, problem))
    return entries
