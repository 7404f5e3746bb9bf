"""Corpus label values -> canonical supervision labels, with provenance.

All mapping goes through the task registry (YAML maps), so a new corpus spelling is a YAML edit.
An unknown value becomes a Reject naming the corpus, the value and where it came from; a value the
corpus map declares as having no label is kept or rejected as the map says (NoLabel); an empty value
means "not labelled" and is left unset. `SupervisionLabels` collects what one row says and writes it
onto a supervision in the DESIGN section 3 layout (gender attribute; age/emotion/style/events and
label_source in custom).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from lhotse import SupervisionSegment
from lhotse.utils import fastcopy

from osum_data.corpora.rejects import NO_LABEL, UNKNOWN_LABEL
from osum_data.rejects import Reject
from osum_data.tasks.registry import LabelError, NoLabel, registry

MAX_AGE_YEARS = 130
_EVENT_SEPARATORS = re.compile(r"[,;|]")


def lookup(field_name: str, value: str, corpus: str, where: str | None = None) -> str | NoLabel:
    """Canonical id or NoLabel for a corpus value; Reject(unknown_label) naming value and file."""
    try:
        return registry().lookup(field_name, value, corpus)
    except LabelError as exc:
        raise Reject(UNKNOWN_LABEL, f"{exc}{_at(where)}") from None


def _at(where: str | None) -> str:
    return f" in {where}" if where else ""


def parse_years(value: str) -> float | None:
    """Age in years if `value` is a number, else None (then it is a bucket name to map)."""
    try:
        years = float(value)
    except ValueError:
        return None
    if not math.isfinite(years) or not 0 <= years <= MAX_AGE_YEARS:
        raise Reject(UNKNOWN_LABEL, f"age {value!r} is not between 0 and {MAX_AGE_YEARS} years")
    return int(years) if years.is_integer() else years


@dataclass
class SupervisionLabels:
    """Labels of one utterance as the corpus gives them, mapped to canonical ids.

    `where` (a file, or file:line) is added to every error so a user can find the offending value.
    """

    corpus: str
    where: str | None = None
    gender: str | None = None
    custom: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def _resolve(self, field_name: str, value: str) -> str | None:
        """Canonical id, or None for a kept non-label (raw value recorded); drop raises Reject."""
        found = lookup(field_name, value, self.corpus, self.where)
        if isinstance(found, NoLabel):
            if not found.keep:
                raise Reject(
                    NO_LABEL,
                    f"{self.corpus} {field_name} {value!r} has no label: {found.reason}{_at(self.where)}",
                )
            self.custom[f"{field_name}_raw"] = value
            return None
        return found

    def set_gender(self, value: str | None) -> None:
        value = (value or "").strip()
        if value and (gender := self._resolve("gender", value)):
            self.gender = gender
            self.sources["gender"] = "corpus"

    def set_age(self, value: str | None, raw_key: str | None = None) -> None:
        """Numeric ages give bucket + age_years; strings are mapped bucket names ("twenties")."""
        value = (value or "").strip()
        if not value:
            return
        try:
            years = parse_years(value)
        except Reject as err:
            raise Reject(err.code, f"{err.detail}{_at(self.where)}") from None
        if years is not None:
            self.custom["age"] = registry().age_bucket(years)
            self.custom["age_years"] = years
        elif (bucket := self._resolve("age", value)) is not None:
            self.custom["age"] = bucket
        else:
            return
        if raw_key:
            self.custom[raw_key] = value
        self.sources["age"] = "corpus"

    def set_category(self, field_name: str, value: str | None) -> None:
        """A single-valued custom label (emotion, style)."""
        value = (value or "").strip()
        if value and (label := self._resolve(field_name, value)):
            self.custom[field_name] = label
            self.sources[field_name] = "corpus"

    def set_events(self, value: str | list[str] | tuple[str, ...] | None) -> None:
        """Events as a list, or one string 'laugh, cough' / 'laugh;cough' / 'laugh|cough'.

        Duplicates collapse; values without a label are left out (custom.events_raw). If no value
        has a label, the row is rejected when any of them says drop, else kept unlabelled.
        """
        if isinstance(value, str) or value is None:
            names = [v.strip() for v in _EVENT_SEPARATORS.split(value or "") if v.strip()]
        else:
            names = [v.strip() for v in value if v.strip()]
        if not names:
            return
        events, unlabelled, drops = [], [], []
        for name in names:
            found = lookup("events", name, self.corpus, self.where)
            if isinstance(found, NoLabel):
                unlabelled.append(name)
                if not found.keep:
                    drops.append(found.reason)
            else:
                events.append(found)
        if unlabelled:
            self.custom["events_raw"] = names
        if not events:
            if drops:
                values = ", ".join(map(repr, names))
                reason = f"{drops[0]}{_at(self.where)}"
                raise Reject(NO_LABEL, f"{self.corpus} events {values} have no label: {reason}")
            return
        self.custom["events"] = list(dict.fromkeys(events))
        self.sources["events"] = "corpus"

    def apply(self, sup: SupervisionSegment) -> SupervisionSegment:
        """`sup` with these labels: gender is replaced, custom entries are merged in."""
        custom = dict(sup.custom or {})
        custom.update(self.custom)
        if self.sources:
            custom["label_source"] = {**custom.get("label_source", {}), **self.sources}
        return fastcopy(sup, gender=self.gender, custom=custom or None)
