"""Mozilla CommonVoice: lhotse's recipe with gender and age mapped onto our vocabularies.

lhotse's prepare_commonvoice copies the raw `gender` ("male_masculine") and `age` ("twenties")
strings; we map them (corpus map "commonvoice"), keep the raw age in custom.age_group_raw, and
leave empty values unset. What the recipe does that we work around:
- it skips a row whose mp3 is missing with an INFO log line: we report it as a reject;
- `languages="auto"` only finds its own list of 23 locales: we pass every <locale>/ folder that has
  clips/ and a split tsv;
- it runs a spawn-context process pool even for one job, which costs seconds per split and fails
  in any caller without an `if __name__ == "__main__"` guard, and always writes its own manifests
  into output_dir: so we run its per-row parser (`_parse_utterance`) on the rows we scanned, in a
  thread pool (probing mp3 headers is I/O bound), and its manifest checks after;
- it crashes on a tsv without its expected columns (older releases lack `variant`) or a row with
  too few fields: we check first and name the file and line.
Only train/dev/test are imported by default: validated.tsv is their superset, so importing it too
would duplicate every cut id.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import lhotse.recipes.commonvoice as lhotse_cv
from lhotse import RecordingSet, SupervisionSet, validate_recordings_and_supervisions
from lhotse.qa import fix_manifests
from lhotse.utils import fastcopy

from osum_data.corpora.labels import SupervisionLabels
from osum_data.corpora.recipe import Expected, assemble, run_recipe
from osum_data.corpora.report import ImportReport
from osum_data.corpora.text import check_utf8
from osum_data.errors import UsageError

CORPUS = "commonvoice"
DEFAULT_SPLITS = ("train", "dev", "test")
# Columns lhotse's _parse_utterance reads; a release lacking one makes the recipe crash.
LHOTSE_COLUMNS = ("client_id", "path", "sentence", "age", "gender", "accents", "variant")


def prepare_commonvoice(
    corpus_dir: Path, out_dir: Path, splits: Sequence[str] = DEFAULT_SPLITS, num_jobs: int = 4
) -> ImportReport:
    """Import every locale folder under CORPUS_DIR (or CORPUS_DIR itself if it is one locale).

    One part per locale and split, named "<locale>_<split>" (cuts_en_train.jsonl.gz); the split
    alone goes to custom.subset and the locale to supervision.language.
    """
    root, locales = locate(Path(os.path.abspath(corpus_dir)))  # lhotse stores paths as given
    expected: list[Expected] = []
    manifests: dict[str, Any] = {}
    split_of: dict[str, str] = {}
    for locale in locales:
        for split in (s for s in splits if (root / locale / f"{s}.tsv").is_file()):
            entries, rows = scan_split(root, locale, split)
            expected += entries
            manifests[f"{locale}_{split}"] = run_recipe(
                "prepare_commonvoice", _parse_split, root / locale, rows=rows, num_jobs=num_jobs
            )
            split_of[f"{locale}_{split}"] = split

    def relabel(sup, part):
        # lhotse's raw age is replaced by our bucket; empty accents/variant carry no information.
        custom = {k: v for k, v in (sup.custom or {}).items() if k != "age" and v not in ("", None)}
        custom["subset"] = split_of[part]
        labels = SupervisionLabels(CORPUS)
        labels.set_gender(sup.gender)
        labels.set_age((sup.custom or {}).get("age"), raw_key="age_group_raw")
        return labels.apply(fastcopy(sup, gender=None, custom=custom))

    return assemble(CORPUS, Path(out_dir), expected, manifests, relabel, expected_labels=("gender", "age"))


def locate(corpus_dir: Path) -> tuple[Path, list[str]]:
    """(release root, locale folders): folders with clips/ and at least one split tsv."""

    def is_locale(d: Path) -> bool:
        return (d / "clips").is_dir() and any(d.glob("*.tsv"))

    if is_locale(corpus_dir):
        return corpus_dir.parent, [corpus_dir.name]
    locales = sorted(d.name for d in corpus_dir.iterdir() if d.is_dir() and is_locale(d))
    if not locales:
        raise FileNotFoundError(
            f"no CommonVoice locale folder (<locale>/clips + <split>.tsv) in {corpus_dir}"
        )
    return corpus_dir, locales


def scan_split(root: Path, locale: str, split: str) -> tuple[list[Expected], list[dict[str, str]]]:
    """One expected utterance per tsv row, read the way lhotse reads it (tab, no quoting), and the
    rows themselves for lhotse's parser."""
    tsv = root / locale / f"{split}.tsv"
    try:
        return _scan_split(root, locale, split, tsv)
    except UnicodeDecodeError:
        check_utf8(tsv)  # names the line and what the file looks like
        raise


def _scan_split(
    root: Path, locale: str, split: str, tsv: Path
) -> tuple[list[Expected], list[dict[str, str]]]:
    entries, rows = [], []
    with open(tsv, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in LHOTSE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UsageError(
                f"{tsv}: missing column(s) {', '.join(missing)} that lhotse's prepare_commonvoice needs"
            )
        for row in reader:
            lineno = reader.line_num
            if any(row.get(c) is None for c in LHOTSE_COLUMNS):
                raise UsageError(
                    f"{tsv}:{lineno}: too few fields; lhotse's prepare_commonvoice cannot parse it"
                )
            clip = row["path"]
            uid = Path(clip).stem  # lhotse's recording, supervision and (here) cut id
            entries.append(
                Expected(uid, split, root / locale / "clips" / clip, f"{locale}/{split}.tsv:{lineno}")
            )
            rows.append(row)
    return entries, rows


def _parse_split(locale_dir: Path, rows: list[dict[str, str]], num_jobs: int) -> dict[str, Any]:
    """What lhotse's recipe builds for one split: its own row parser (which skips a row whose mp3 is
    missing) over `rows`, then its manifest fixing and checks."""
    with lhotse_cv.disable_ffmpeg_torchaudio_info(), ThreadPoolExecutor(max(1, num_jobs)) as pool:
        parsed = [
            p
            for p in pool.map(lambda row: lhotse_cv._parse_utterance(locale_dir, locale_dir.name, row), rows)
            if p
        ]
    recordings, supervisions = fix_manifests(
        RecordingSet.from_recordings(r for r, _ in parsed), SupervisionSet.from_segments(s for _, s in parsed)
    )
    validate_recordings_and_supervisions(recordings, supervisions)
    return {"recordings": recordings, "supervisions": supervisions}
