"""What a mix folder holds and how its cuts are named: the contract between `osum-data mix`, which
writes it (osum_data.mix), and the exports and the audit, which read it. It lives here, below both,
so that neither reaches up into the other.

    DIR/plan/<split>/<task>/<dataset>.jsonl.gz   each dataset's unique cuts of a split
    DIR/plan/mix.jsonl.gz                        what the mix wrote (train stream, then dev/test)
"""

from __future__ import annotations

from pathlib import Path

from osum_data.manifest_io import safe_file_name
from osum_data.seeded import unit_draw

SPLITS = ("train", "dev", "test")
PLAN_DIR = "plan"
U32 = 2**32


def plan_dir(root: Path, split: str, task: str) -> Path:
    """The folder of one task's plan manifests of one split."""
    return Path(root) / PLAN_DIR / split / task


def plan_path(root: Path, split: str, task: str, dataset: str) -> Path:
    """One dataset's plan manifest of one split."""
    return plan_dir(root, split, task) / f"{dataset}.jsonl.gz"


def mix_manifest(root: Path) -> Path:
    """The mix's cuts as one manifest (what `osum-data export` of a mix folder reads)."""
    return Path(root) / PLAN_DIR / "mix.jsonl.gz"


def mixed_id(dataset: str, cut_id: str) -> str:
    """Ids in a mix carry their dataset's name (letters, digits, `_`, `-`; unique in the mix): one
    corpus feeds several tasks, or datasets, under the same cut ids. The source id goes through
    `safe_file_name` (unchanged when it is already a plain name; else made one, with a hash of the
    id): Lhotse Shar names each cut's tar member after its id, and a member named `../../x` or
    `a/b` would be written outside (or below) the folder a tar is extracted to. The source id
    itself stays in `custom.mix.source_id`."""
    return f"{dataset}.{safe_file_name(cut_id)}"


def subsample_draw(seed: int, dataset: str, source_id: str) -> int:
    """The 32-bit draw that decides which train cuts of a dataset make its fractional extra copy
    (the mix sizes the subset with it; the OSUM export rebuilds the same subset)."""
    return min(U32 - 1, int(unit_draw(seed, f"subsample:{dataset}", source_id) * U32))
