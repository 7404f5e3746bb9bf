"""IEMOCAP (no lhotse recipe): emotion per turn from the evaluators' majority label.

Layout (IEMOCAP_full_release/): Session{1..5}/dialog/EmoEvaluation/<dialog>.txt holds one header line
per evaluated turn, `[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]`,
followed by per-evaluator lines (`C-E1:`, `A-E3:` ...) that we skip; the turn's audio is
Session*/sentences/wav/<dialog>/<turn>.wav and its words are a line
`Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.` in Session*/dialog/transcriptions/<dialog>.txt.
The turn id's last part starts with the speaker's sex (F/M); the speaker is the session plus that
letter (Ses01F). `xxx` (no majority) and `oth` are mapped in corpus_maps.yaml; the dimensional
ratings go to custom.vad. One part per session, since IEMOCAP is evaluated leave-one-session-out.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from osum_data.corpora.rejects import MALFORMED_LINE, NO_TRANSCRIPT
from osum_data.corpora.report import ImportReport
from osum_data.corpora.rows import Row, import_rows, relative
from osum_data.rejects import Reject

CORPUS = "iemocap"
_HEADER = re.compile(
    r"^\[(?P<start>[\d.]+)\s*-\s*(?P<end>[\d.]+)\]\s+(?P<turn>\S+)\s+(?P<emotion>\S+)\s+\[(?P<vad>[^\]]*)\]"
)
_TRANSCRIPT = re.compile(r"^(?P<turn>\S+)\s+\[[^\]]*\]:\s?(?P<text>.*)$")
_SESSION = re.compile(r"Session\d+")


def prepare_iemocap(corpus_dir: Path, out_dir: Path) -> ImportReport:
    """Import every Session*/ under CORPUS_DIR (or CORPUS_DIR/IEMOCAP_full_release)."""
    root = locate(Path(os.path.abspath(corpus_dir)))
    sessions = sorted((d for d in root.iterdir() if d.is_dir() and _SESSION.fullmatch(d.name)), key=_number)
    parts = ((s.name, scan_session(root, s)) for s in sessions)
    return import_rows(CORPUS, Path(out_dir), parts, expected_labels=("gender", "emotion"))


def locate(corpus_dir: Path) -> Path:
    for root in (corpus_dir, corpus_dir / "IEMOCAP_full_release"):
        if root.is_dir() and any(_SESSION.fullmatch(d.name) for d in root.iterdir()):
            return root
    raise FileNotFoundError(f"no IEMOCAP Session*/ folder in {corpus_dir}")


def _number(path: Path) -> int:
    return int(path.name.removeprefix("Session"))


def scan_session(root: Path, session: Path) -> Iterator[Row]:
    """One row per evaluated turn of every dialog of the session, in file order."""
    for evaluation in sorted((session / "dialog" / "EmoEvaluation").glob("*.txt")):
        dialog = evaluation.stem
        transcripts = read_transcripts(session / "dialog" / "transcriptions" / f"{dialog}.txt")
        lines = evaluation.read_text(encoding="utf-8", errors="replace").splitlines()
        for lineno, line in enumerate(lines, start=1):
            if not line.startswith("["):
                continue
            source = f"{relative(evaluation, root)}:{lineno}"
            match = _HEADER.match(line)
            if match is None:
                problem = Reject(MALFORMED_LINE, f"not an IEMOCAP turn header: {line[:80]!r}")
                yield Row(id=f"{dialog}:{lineno}", source=source, audio=None, problem=problem)
                continue
            turn = match["turn"]
            problem = None
            if turn not in transcripts:
                problem = Reject(
                    NO_TRANSCRIPT, f"turn {turn} has no line in dialog/transcriptions/{dialog}.txt"
                )
            sex = turn.rsplit("_", 1)[-1][:1]
            yield Row(
                id=turn,
                source=source,
                audio=session / "sentences" / "wav" / dialog / f"{turn}.wav",
                text=transcripts.get(turn),
                speaker=f"{turn[:5]}{sex}",
                language="en",
                gender=sex,
                emotion=match["emotion"],
                custom={
                    "subset": session.name,
                    "dialog": dialog,
                    "dialog_span": [float(match["start"]), float(match["end"])],
                    "vad": _floats(match["vad"]),
                },
                problem=problem,
            )


def read_transcripts(path: Path) -> dict[str, str]:
    """Turn id -> words; lines that are not `<turn> [start-end]: text` (e.g. notes) are skipped."""
    if not path.is_file():
        return {}
    texts = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if match := _TRANSCRIPT.match(line.strip()):
            texts[match["turn"]] = match["text"].strip()
    return texts


def _floats(text: str) -> list[float] | None:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        return None
