"""Corpus label values -> canonical supervision labels, with provenance.

All mapping goes through the task registry (YAML maps), so a new corpus spelling is a YAML edit.
An unknown value becomes a RowError naming it; an empty value means "not labelled" and is left
unset. `SupervisionLabels` collects what one row says and writes it onto a supervision in the
DESIGN section 3 layout (gender attribute; age/emotion/style/events and label_source in custom).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from lhotse import SupervisionSegment
from lhotse.utils import fastcopy

from osum_data.corpora.rejects import UNKNOWN_LABEL, RowError
from osum_data.tasks.registry import LabelError, registry

MAX_AGE_YEARS = 130
_EVENT_SEPARATORS = re.compile(r"[,;|]")


@cache
def _unlabelled_values() -> dict[str, dict[str, frozenset[str]]]:
    with open(Path(__file__).with_name("unlabelled.yaml"), encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    return {
        fld: {corpus: frozenset(str(v).casefold() for v in values) for corpus, values in tables.items()}
        for fld, tables in data.items()
    }


def is_outside_vocabulary(field_name: str, value: str, corpus: str) -> bool:
    """True for known corpus answers that have no canonical label (see unlabelled.yaml)."""
    return value.strip().casefold() in _unlabelled_values().get(field_name, {}).get(corpus, frozenset())


def map_value(field_name: str, value: str, corpus: str) -> str:
    try:
        return registry().map_label(field_name, value, corpus)
    except LabelError as exc:
        raise RowError(UNKNOWN_LABEL, str(exc)) from None


def parse_years(value: str) -> float | None:
    """Age in years if `value` is a number, else None (then it is a bucket name to map)."""
    try:
        years = float(value)
    except ValueError:
        return None
    if not math.isfinite(years) or not 0 <= years <= MAX_AGE_YEARS:
        raise RowError(UNKNOWN_LABEL, f"age {value!r} is not between 0 and {MAX_AGE_YEARS} years")
    return int(years) if years.is_integer() else years


@dataclass
class SupervisionLabels:
    """Labels of one utterance as the corpus gives them, mapped to canonical ids."""

    corpus: str
    gender: str | None = None
    custom: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def set_gender(self, value: str | None) -> None:
        value = (value or "").strip()
        if not value:
            return
        if is_outside_vocabulary("gender", value, self.corpus):
            self.custom["gender_raw"] = value
            return
        self.gender = map_value("gender", value, self.corpus)
        self.sources["gender"] = "corpus"

    def set_age(self, value: str | None, raw_key: str | None = None) -> None:
        """Numeric ages give bucket + age_years; strings are mapped bucket names ("twenties")."""
        value = (value or "").strip()
        if not value:
            return
        years = parse_years(value)
        if years is not None:
            self.custom["age"] = registry().age_bucket(years)
            self.custom["age_years"] = years
        else:
            self.custom["age"] = map_value("age", value, self.corpus)
        if raw_key:
            self.custom[raw_key] = value
        self.sources["age"] = "corpus"

    def set_category(self, field_name: str, value: str | None) -> None:
        """A single-valued custom label (emotion, style)."""
        value = (value or "").strip()
        if value:
            self.custom[field_name] = map_value(field_name, value, self.corpus)
            self.sources[field_name] = "corpus"

    def set_events(self, value: str | None) -> None:
        """Events as a list: 'laugh, cough' / 'laugh;cough' / 'laugh|cough'; duplicates collapse."""
        names = [v.strip() for v in _EVENT_SEPARATORS.split(value or "") if v.strip()]
        if not names:
            return
        events = [map_value("events", name, self.corpus) for name in names]
        self.custom["events"] = list(dict.fromkeys(events))
        self.sources["events"] = "corpus"

    def apply(self, sup: SupervisionSegment) -> SupervisionSegment:
        """`sup` with these labels: gender is replaced, custom entries are merged in."""
        custom = dict(sup.custom or {})
        custom.update(self.custom)
        if self.sources:
            custom["label_source"] = {**custom.get("label_source", {}), **self.sources}
        return fastcopy(sup, gender=self.gender, custom=custom or None)
