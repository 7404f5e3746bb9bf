"""Duplicates across the whole input: exact audio, gain-changed audio, same and near-same text;
first kept, the rest rejected `duplicate_of:<id>`, across shards on Ray (#17 item 1, duplicates)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from osum_data.manifest_io import read_jsonl, write_jsonl
from osum_data.quality.duplicates import minhash, normalise_text
from osum_data.run.params import SideInput
from tests.quality_fixtures import built, cut_of, real_speech, write

NEAR = "please enter the number of the mailbox you wish to reach followed by the pound key"


def corpus(tmp_path: Path) -> Path:
    """Real prompts; ids in input order, with the copies spread so shards of 2 split them."""
    a, text_a = real_speech("activated")
    b, _ = real_speech("added")
    c, _ = real_speech("agent-pass")
    d, _ = real_speech("agent-user")
    write(tmp_path / "a.wav", a)
    shutil.copy(tmp_path / "a.wav", tmp_path / "a_copy.wav")  # same bytes, other file
    rows = [
        (cut_of(tmp_path / "a.wav", text_a), "s1"),
        (cut_of(write(tmp_path / "b.wav", b), NEAR), "s1"),
        (cut_of(write(tmp_path / "c.wav", c), "a sentence read by many"), "s1"),
        (cut_of(tmp_path / "a_copy.wav", "other words entirely"), "s1"),  # audio of a
        (cut_of(write(tmp_path / "a_gain.wav", a * 1.01), "yet other words"), "s1"),  # a, 1 % louder
        (cut_of(write(tmp_path / "d.wav", d), NEAR.replace("pound key", "pound sign") + "."), "s1"),
        (cut_of(write(tmp_path / "d2.wav", d[::-1].copy()), "A sentence, read by MANY!"), "s1"),
        (
            cut_of(write(tmp_path / "c2.wav", c[::-1].copy()), "a sentence read by many"),
            "s2",
        ),  # other speaker
    ]
    cuts = []
    for cut, speaker in rows:
        cut.supervisions[0].speaker = speaker
        cuts.append(cut.to_dict())
    manifest = tmp_path / "in.jsonl.gz"
    write_jsonl(manifest, cuts)
    return manifest


EXPECTED = {
    "a_copy": "duplicate_of:a (audio)",
    "a_gain": "duplicate_of:a (audio_gain)",
    "d": "duplicate_of:b (near_text)",
    "d2": "duplicate_of:c (text)",
}


def test_minhash_similarity_tracks_text_overlap() -> None:
    near = minhash(normalise_text(NEAR + " please"))
    same = minhash(normalise_text(NEAR.upper() + "!"))
    other = minhash(normalise_text("the quick brown fox jumps over the lazy dog"))
    base = minhash(normalise_text(NEAR))
    assert (same == base).all()
    assert (near == base).mean() > 0.75 > (other == base).mean()


def test_first_occurrence_kept_later_copies_rejected_with_what_matched(tmp_path: Path) -> None:
    from lhotse import CutSet

    manifest = corpus(tmp_path)
    stage = built("quality_duplicates", of=str(manifest))
    result = stage(list(CutSet.from_file(manifest)), None)
    got = {c.id: r.detail for c, r in result.rejected}
    assert got == EXPECTED
    assert {r.code for _, r in result.rejected} == {"duplicate"}
    assert [c.id for c in result.kept] == ["a", "b", "c", "c2"]
    assert result.counters["duplicates"] == 4


def test_text_matching_can_ignore_speakers_or_be_switched_off(tmp_path: Path) -> None:
    from lhotse import CutSet

    manifest = corpus(tmp_path)
    cuts = list(CutSet.from_file(manifest))
    any_speaker = built("quality_duplicates", of=str(manifest), same_speaker_only=False)(cuts, None)
    assert {c.id for c, _ in any_speaker.rejected} == set(EXPECTED) | {"c2"}
    audio_only = built("quality_duplicates", of=str(manifest), text="off")(cuts, None)
    assert {c.id for c, _ in audio_only.rejected} == {"a_copy", "a_gain"}


def test_a_cut_outside_the_reference_is_checked_against_it(tmp_path: Path) -> None:
    from lhotse import CutSet

    manifest = corpus(tmp_path)
    a, text_a = real_speech("activated")
    newcomer = cut_of(write(tmp_path / "new.wav", a * 0.5), "fresh words")
    newcomer.supervisions[0].speaker = "s9"
    stage = built("quality_duplicates", of=str(manifest))
    result = stage([newcomer, *CutSet.from_file(manifest)], None)
    assert {c.id: r.detail for c, r in result.rejected}["new"] == "duplicate_of:a (audio_gain)"


@pytest.mark.slow  # a real Ray run: ~60 s wall on the shared 2-core machine
def test_duplicates_are_found_across_shards_and_workers(tmp_path: Path, ray_session) -> None:
    from osum_data.run.config import build_config
    from osum_data.run.runner import run_pipeline

    manifest = corpus(tmp_path)
    cfg = build_config(
        {"name": "dups", "shard_size": 2, "stages": [{"stage": "quality_duplicates", "of": str(manifest)}]}
    )
    res = run_pipeline(cfg, manifest, tmp_path / "out", workers=2, progress=False)
    rejects = list(read_jsonl(tmp_path / "out" / "rejects.jsonl.gz"))
    assert {d["id"]: d["custom"]["reject"]["reason"] for d in rejects} == EXPECTED
    assert {d["custom"]["reject"]["code"] for d in rejects} == {"duplicate"}
    assert res.summary["in"] == 8 and res.summary["out"] + res.summary["rejected"] == 8
    assert len(list((tmp_path / "out" / "quality").glob("duplicates.*.json"))) == 1  # built once


def test_the_reference_manifest_must_exist() -> None:
    from osum_data.run.params import ParamError, validate_params
    from osum_data.run.stage import get_stage

    with pytest.raises(ParamError, match="does not exist"):
        validate_params(get_stage("quality_duplicates"), {"of": "nowhere.jsonl.gz"})
    assert SideInput  # the parameter type the stage declares
