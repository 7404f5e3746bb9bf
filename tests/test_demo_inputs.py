"""Issue 15 item 6: every generated demo input is seeded (two builds write the same bytes), and a
rebuild into the same folder leaves unchanged files untouched (their mtime is part of the side-input
resume key, so a second `make demo` reuses the SGC/SAP shards made with them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from osum_data.demo import keep_or_replace
from osum_data.demo.joined import longform_input
from osum_data.demo.para import noise_input, personas_input, rir_input
from osum_data.manifest_io import read_jsonl

# name -> builder(output, limit) of a demo input that synthesises audio
BUILDERS = {
    "noise": lambda out: noise_input(out),
    "rirs": lambda out: rir_input(out),
    "personas": lambda out: personas_input(out, limit=10),  # espeak-ng and flite personas
    "longform": lambda out: longform_input(out, limit=3),
}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _audio(manifest: Path) -> list[str]:
    return [s["source"] for d in read_jsonl(manifest) for s in d["recording"]["sources"]]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_two_builds_of_a_demo_input_write_the_same_bytes(name, tmp_path):
    a = BUILDERS[name](tmp_path / "a")
    b = BUILDERS[name](tmp_path / "b")
    audio_a, audio_b = _audio(a), _audio(b)
    assert audio_a and len(audio_a) == len(audio_b)
    for x, y in zip(audio_a, audio_b, strict=True):
        assert Path(x).read_bytes() == Path(y).read_bytes(), f"{name}: {x} and {y} differ"
    # Everything else they wrote (metadata, manifests, references) too, up to the folder name.
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert fa.keys() == fb.keys()
    assert not [k for k in fa if k.endswith(".part.wav") or k.endswith(".part.flac")]
    for key in fa:
        if key.endswith(".gz"):
            continue  # paths inside: compared as audio above
        assert fa[key].replace(str(tmp_path / "a").encode(), b"") == fb[key].replace(
            str(tmp_path / "b").encode(), b""
        ), f"{name}: {key} differs"


def test_a_rebuild_keeps_unchanged_audio_files_untouched(tmp_path):
    first = noise_input(tmp_path)
    stats = {p: Path(p).stat().st_mtime_ns for p in _audio(first)}
    noise_input(tmp_path)
    assert {p: Path(p).stat().st_mtime_ns for p in _audio(first)} == stats


def test_keep_or_replace_replaces_changed_bytes_only(tmp_path):
    final, new = tmp_path / "x.wav", tmp_path / "x.part.wav"
    new.write_bytes(b"one")
    assert keep_or_replace(new, final) and final.read_bytes() == b"one" and not new.exists()
    new.write_bytes(b"one")
    assert not keep_or_replace(new, final) and not new.exists()
    new.write_bytes(b"two")
    assert keep_or_replace(new, final) and final.read_bytes() == b"two"
