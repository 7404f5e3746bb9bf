"""What an import did: rows seen, cuts written, rows rejected and why.

Every importer returns one `ImportReport`; the CLI prints `summary()`. The invariant
`rows == cuts + rejected` is checked on construction, so an importer that loses a row fails loudly
instead of dropping data silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ImportReport:
    rows: int
    cuts: int
    rejected: int
    rejects_by_reason: dict[str, int]
    out_dir: Path
    corpus: str = ""
    duration_s: float = 0.0
    # Cuts kept without a label the corpus usually gives (field -> count), e.g. a speaker missing
    # from SPEAKERS.TXT: not an error, but the user should know how much SGC/SAP data they lost.
    unlabelled: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what the user should know (e.g. table columns nothing reads)

    def __post_init__(self) -> None:
        if self.rows != self.cuts + self.rejected:
            raise AssertionError(
                f"import accounting broken: {self.rows} rows != {self.cuts} cuts + {self.rejected} rejected"
            )
        if sum(self.rejects_by_reason.values()) != self.rejected:
            raise AssertionError(f"rejects_by_reason {self.rejects_by_reason} do not sum to {self.rejected}")

    def summary(self) -> str:
        name = f"{self.corpus}: " if self.corpus else ""
        text = (
            f"{name}{self.rows} rows -> {self.cuts} cuts ({self.duration_s / 3600:.2f} h), "
            f"{self.rejected} rejected"
        )
        if self.rejects_by_reason:
            reasons = ", ".join(
                f"{reason.replace('_', ' ')}: {n}" for reason, n in sorted(self.rejects_by_reason.items())
            )
            text += f" ({reasons})"
        text += "."
        if self.unlabelled:
            missing = ", ".join(f"{n} without {f}" for f, n in sorted(self.unlabelled.items()))
            text += f" Kept cuts lacking a label: {missing}."
        for note in self.notes:
            text += f" Note: {note}."
        text += f" Manifests in {self.out_dir}"
        if self.rejected:
            text += f"; every rejected row with its reason is in {Path(self.out_dir) / 'rejects.jsonl.gz'}"
        return text + "."
