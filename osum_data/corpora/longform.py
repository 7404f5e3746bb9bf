"""`prepare longform AUDIO_DIR OUT_DIR`: a folder of long raw recordings -> one cut per file.

The cuts have no supervision yet: a long-form pipeline (`pipelines/longform.yaml`) segments them
(VAD, diarisation or imported RTTM/STM) into derived cuts and labels those. Every audio file under
AUDIO_DIR is a row (ids are the relative path without suffix, '/' -> '_'); an unreadable, empty or
duplicate-id file is rejected with the reason. Multi-channel files keep their channels.
"""

from __future__ import annotations

from pathlib import Path

from lhotse.cut import Cut

from osum_data.corpora.audio import probe
from osum_data.corpora.media import demux_to_flac, needs_demux
from osum_data.corpora.output import write_import
from osum_data.corpora.rejects import DUPLICATE_ID, EMPTY_AUDIO, RejectLog
from osum_data.corpora.report import ImportReport
from osum_data.rejects import Reject

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".mp4", ".sph", ".aac", ".webm")


def recording_id(root: Path, path: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix().replace("/", "_")


def prepare_longform(corpus_dir: Path, out_dir: Path) -> ImportReport:
    root = Path(corpus_dir).resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {corpus_dir}")
    rejects, cuts, seen = RejectLog("longform"), [], set()
    for path in files:
        rec_id = recording_id(root, path)
        try:
            if rec_id in seen:
                raise Reject(DUPLICATE_ID, f"{path}: id {rec_id!r} already taken by another file")
            seen.add(rec_id)
            source = (
                demux_to_flac(path, Path(out_dir) / "audio" / f"{rec_id}.flac") if needs_demux(path) else path
            )
            rec = probe(source, rec_id)
            if rec.duration <= 0:
                raise Reject(EMPTY_AUDIO, f"{path}: no samples")
        except Reject as e:
            rejects.row(e, rec_id, path=str(path))
            continue
        cut: Cut = rec.to_cut()
        cut.id = rec_id
        cut.custom = {"kind": "longform", "source_path": str(path)}
        cuts.append(cut)
    return write_import(Path(out_dir), "longform", [(None, cuts)], rejects, len(files))
