"""MUSAN and RIRS_NOISES: noise, music, babble and room impulse responses as plain cuts (one per
recording, no supervisions), for the augmentation stage's side inputs.

Each cut's custom says what it is: `kind` (noise | music | speech | rir) plus what lhotse's recipes
drop: MUSAN's ANNOTATIONS fields (music genres and vocals, which lhotse keeps only on supervisions,
and the speech/noise annotations it ignores), RIRS_NOISES' list files (`--noise-type`, `--bg-fg-type`,
`--room-id` from pointsource_noises/noise_list, real_rirs_isotropic_noises/{rir,noise}_list and
simulated_rirs/*/rir_list). Every wav under a part's folder is a row. MUSAN is read file by file, so
an unreadable file is a reject with the reason; RIRS_NOISES goes through lhotse's recipe, and a file
the recipe skipped is rejected with the reason (real_rirs_isotropic_noises files named neither *rir*
nor *noise*). Multi-channel recordings (some real RIRs) become MultiCuts over all channels.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from lhotse import Recording
from lhotse.cut import Cut, MonoCut, MultiCut
from lhotse.recipes import prepare_rir_noise as lhotse_prepare_rir_noise

from osum_data.corpora.audio import probe
from osum_data.corpora.output import write_import
from osum_data.corpora.recipe import run_recipe
from osum_data.corpora.rejects import DROPPED_BY_LHOTSE, DUPLICATE_ID, RejectLog
from osum_data.corpora.report import ImportReport
from osum_data.rejects import Reject

MUSAN_PARTS = ("music", "speech", "noise")
RIR_PARTS = {  # lhotse part -> (folder, kind, which wavs of the folder the recipe takes)
    "point_noise": ("pointsource_noises", "noise", lambda p: True),
    "iso_noise": ("real_rirs_isotropic_noises", "noise", lambda p: "noise" in p.stem),
    "real_rir": ("real_rirs_isotropic_noises", "rir", lambda p: "rir" in p.stem),
    "sim_rir": (
        "simulated_rirs",
        "rir",
        lambda p: p.parent.parent.name in ("smallroom", "mediumroom", "largeroom"),
    ),
}


def prepare_musan(corpus_dir: Path, out_dir: Path) -> ImportReport:
    """Every wav of each part, probed one by one (not through lhotse's recipe, which fails as a
    whole on one unreadable file or an empty folder): a file that cannot be read is a reject with
    the reason, and the rest import."""
    root = _locate(Path(os.path.abspath(corpus_dir)), "musan", MUSAN_PARTS)
    parts = [p for p in MUSAN_PARTS if (root / p).is_dir()]
    cuts: dict[str, list[Cut]] = {}
    rejects = RejectLog("musan")
    rows = 0
    seen: dict[str, Path] = {}
    for part in parts:
        annotations = _musan_annotations(root / part)
        wavs = sorted((root / part).rglob("*.wav"))
        rows += len(wavs)
        recordings: dict[str, Recording] = {}
        for wav in wavs:
            try:
                if wav.stem in seen:
                    raise Reject(DUPLICATE_ID, f"id {wav.stem!r} already taken by {seen[wav.stem]}")
                seen[wav.stem] = wav
                recordings[wav.stem] = probe(wav, wav.stem)
            except Reject as e:
                rejects.row(e, wav.stem, audio=str(wav), source=str(wav.relative_to(root)))

        def extra(rec: Recording, part: str = part, annotations=annotations) -> dict[str, Any]:
            info: dict[str, Any] = {"kind": part, "source": "musan"}
            fields = annotations.get(rec.id)
            if fields is not None:
                info["annotation"] = fields
                if part == "music" and len(fields) >= 2:  # <id> <genres> <vocals Y/N> <artist>
                    info.update(genres=fields[0].split(","), vocals=fields[1] == "Y")
            return info

        probed = [w for w in wavs if recordings.get(w.stem) is not None and seen[w.stem] == w]
        cuts[part] = _cuts(root, probed, recordings, lambda p: p.stem, extra, rejects, f"musan {part}")
    if rows == 0:
        raise FileNotFoundError(f"no .wav files under {', '.join(str(root / p) for p in parts)}")
    return write_import(Path(out_dir), "musan", cuts.items(), rejects, rows)


def prepare_rirs_noises(corpus_dir: Path, out_dir: Path) -> ImportReport:
    root = _locate(Path(os.path.abspath(corpus_dir)), "RIRS_NOISES", [f for f, _, _ in RIR_PARTS.values()])
    parts = [p for p, (folder, _, _) in RIR_PARTS.items() if (root / folder).is_dir()]
    manifests = run_recipe("prepare_rir_noise", lhotse_prepare_rir_noise, root, output_dir=None, parts=parts)
    lists = _rir_lists(root)
    cuts: dict[str, list[Cut]] = {}
    rejects = RejectLog("rirs_noises")
    rows = 0
    claimed: set[Path] = set()
    for part in parts:
        folder, kind, takes = RIR_PARTS[part]
        recordings = {r.id: r for r in manifests[part]["recordings"]}
        listed = {
            root / rel
            for rel, opts in lists.items()
            if rel.startswith(f"{folder}/") and _list_kind(opts) == kind
        }
        wavs = [p for p in sorted((root / folder).rglob("*.wav")) if takes(p) or p in listed]
        for wav in wavs:  # real RIRs/noises the list files name but the recipe's name filter misses (AIR)
            if wav.stem not in recordings and wav in listed and part in ("real_rir", "iso_noise"):
                recordings[wav.stem] = Recording.from_file(wav)
        claimed.update(wavs)
        rows += len(wavs)

        def rec_id(p: Path, part: str = part) -> str:
            # lhotse names simulated RIRs <room size>-<file stem>: the three rooms reuse file names
            return f"{p.parent.parent.name.removesuffix('room')}-{p.stem}" if part == "sim_rir" else p.stem

        def extra(rec: Recording, part: str = part, kind: str = kind) -> dict[str, Any]:
            source = Path(rec.sources[0].source)
            info = {"kind": kind, "source": "rirs_noises", "part": part, "num_channels": rec.num_channels}
            options = lists.get(source.relative_to(root).as_posix(), {})
            info.update(
                {k.replace("-", "_"): v for k, v in options.items() if k not in ("rir-id", "noise-id")}
            )
            return info

        cuts[part] = _cuts(root, wavs, recordings, rec_id, extra, rejects, f"rirs_noises {part}")
    for wav in sorted((root / "real_rirs_isotropic_noises").rglob("*.wav")):
        if wav not in claimed:
            rows += 1
            why = (
                f"{wav.name} is in no rir_list/noise_list and its name has neither 'rir' nor 'noise', "
                "the only files lhotse's rir_noise recipe takes"
            )
            rejects.row(
                Reject(DROPPED_BY_LHOTSE, why), wav.stem, audio=str(wav), source=str(wav.relative_to(root))
            )
    return write_import(Path(out_dir), "rirs_noises", cuts.items(), rejects, rows)


def _list_kind(options: dict[str, str]) -> str:
    return "rir" if "rir-id" in options else "noise"


def _locate(corpus_dir: Path, inner: str, folders: Iterable[str]) -> Path:
    for root in (corpus_dir, corpus_dir / inner):
        if any((root / f).is_dir() for f in folders):
            return root
    raise FileNotFoundError(f"none of {', '.join(sorted(set(folders)))} under {corpus_dir}")


def _cuts(
    root: Path,
    wavs: list[Path],
    recordings: dict[str, Recording],
    rec_id: Callable[[Path], str],
    extra: Callable[[Recording], dict[str, Any]],
    rejects: RejectLog,
    what: str,
) -> list[Cut]:
    """One cut per wav the recipe produced (id = recording id); a wav it skipped is a reject."""
    out = []
    for wav in wavs:
        rec = recordings.get(rec_id(wav))
        if rec is None:
            why = f"lhotse's recipe produced no recording for {wav.name} ({what})"
            rejects.row(
                Reject(DROPPED_BY_LHOTSE, why), rec_id(wav), audio=str(wav), source=str(wav.relative_to(root))
            )
            continue
        kwargs = {
            "id": rec.id,
            "start": 0.0,
            "duration": rec.duration,
            "recording": rec,
            "custom": extra(rec),
        }
        if rec.num_channels == 1:
            out.append(MonoCut(channel=rec.channel_ids[0], **kwargs))
        else:
            out.append(MultiCut(channel=list(rec.channel_ids), **kwargs))
    return sorted(out, key=lambda c: c.id)


def _musan_annotations(folder: Path) -> dict[str, list[str]]:
    """Recording id -> the other whitespace-separated fields of its ANNOTATIONS line(s)."""
    out = {}
    for path in sorted(folder.rglob("ANNOTATIONS")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            fields = line.split()
            if fields:
                out[fields[0]] = fields[1:]
    return out


def _rir_lists(root: Path) -> dict[str, dict[str, str]]:
    """Wav path (relative to the corpus) -> its `--key value` options from the list files."""
    out: dict[str, dict[str, str]] = {}
    for path in sorted([*root.glob("*/noise_list"), *root.glob("*/rir_list"), *root.glob("*/*/rir_list")]):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            tokens = shlex.split(line)
            if not tokens:
                continue
            options = {
                tokens[i][2:]: tokens[i + 1] for i in range(len(tokens) - 1) if tokens[i].startswith("--")
            }
            out[tokens[-1]] = options
    return out
