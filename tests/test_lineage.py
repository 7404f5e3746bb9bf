"""Lineage: every cut knows what it is made of, along every derivation the stages make (issue 16/1).

Real recorded prompts and event clips, the real event_composite and augment stages, the demo's real
joined long recording and the long-form segmenting helper.
"""

from __future__ import annotations

import json

import pytest

from osum_data.demo.joined import prompt_keys
from osum_data.label.longform.segments import Segment, segment_cut
from osum_data.mix.lineage import ID, SRC, audio_signature, lineage, sample_key, speaker
from tests.lineage_fixtures import (
    augmented,
    composites,
    event_clips,
    joined_long_cut,
    prompt_cuts,
    sentence_prompts,
)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from lhotse import CutSet

    path = event_clips(tmp_path_factory.mktemp("events"), limit=3)
    return path, list(CutSet.from_file(path))


def test_a_corpus_cut_is_its_recording_and_file():
    (cut,) = prompt_cuts(sentence_prompts(1))
    keys = lineage(cut)
    assert keys == {ID + cut.id, SRC + cut.recording.sources[0].source}
    assert lineage(cut.to_dict()) == keys and speaker(cut) == "allison"


def test_a_composite_holds_its_speech_and_its_event_clip_along_further_derivations(clips, tmp_path):
    """Leak shape 1: the clip inside a composite is also an X-only caption sample."""
    events, clip_cuts = clips
    speech = prompt_cuts(sentence_prompts(3))
    made = composites(speech, events, tmp_path)
    by_clip = {c.id: c for c in clip_cuts}
    for comp, src in zip(made, speech, strict=True):
        clip = by_clip[comp.custom["composite"]["event_cut_id"]]
        keys = lineage(comp)
        assert lineage(src) <= keys and lineage(clip) <= keys, (keys, lineage(clip))
        # its own FLAC is private to it: not a key
        assert not any(k.startswith(SRC) and k.endswith(".flac") for k in keys)
    # an augmented copy of a composite still reaches the clip and the speech (source_cut_id names
    # only the composite)
    copies = [c for c in augmented(made, tmp_path / "aug") if (c.custom or {}).get("augment")]
    for copy in copies:
        comp = next(c for c in made if c.id == copy.custom["source_cut_id"])
        clip = by_clip[comp.custom["composite"]["event_cut_id"]]
        assert lineage(clip) <= lineage(copy) and ID + comp.custom["composite"]["speech_cut_id"] in lineage(
            copy
        )


def test_a_segment_of_the_joined_recording_reaches_the_prompt_it_is(tmp_path):
    """Leak shape 3: a long-form segment is the same speech as an ASR utterance of the demo."""
    long_cut = joined_long_cut(tmp_path, n_prompts=4)
    pieces = json.loads((tmp_path / "reference.json").read_text())
    assert [p["lineage"] for p in long_cut.custom["joined_from"]] == [prompt_keys(p["name"]) for p in pieces]
    second = pieces[1]
    seg = segment_cut(long_cut, Segment(second["start"] - 0.1, second["end"] + 0.1), "vad")
    keys = lineage(seg)
    (utterance,) = prompt_cuts([second["name"]])  # the ASR run's cut of that prompt
    assert lineage(utterance) <= keys  # its id and its file
    assert ID + long_cut.id in keys and "joined_from" not in seg.custom
    for other in (pieces[0], pieces[2], pieces[3]):
        assert not set(prompt_keys(other["name"])) & keys  # only the prompt it overlaps
    # the chain survives a derivation of the segment (an augmented copy)
    (copy,) = [c for c in augmented([seg], tmp_path / "aug") if (c.custom or {}).get("augment")]
    assert lineage(utterance) <= lineage(copy)


def test_the_same_augmented_copy_made_by_two_runs_is_one_sample(tmp_path):
    """Finding 3: the SAP run is byte-identical to SGC's TTS part: same ids, same augmented audio in
    two run folders. Same audio signature (and sample key) though the files differ; another seed,
    another sample."""
    speech = prompt_cuts(sentence_prompts(2))
    a = [c for c in augmented(speech, tmp_path / "sap") if (c.custom or {}).get("augment")]
    b = [c for c in augmented(speech, tmp_path / "sgc") if (c.custom or {}).get("augment")]
    c = [x for x in augmented(speech, tmp_path / "other", seed=1) if (x.custom or {}).get("augment")]
    for x, y, z in zip(a, b, c, strict=True):
        assert x.recording.sources[0].source != y.recording.sources[0].source
        assert x.load_audio().tobytes() == y.load_audio().tobytes()
        assert audio_signature(x) == audio_signature(y) and sample_key(x) == sample_key(y)
        assert audio_signature(x) != audio_signature(z)
        for cut in (x, y):
            cut.custom = {**cut.custom, "task": "<TRANSCRIBE>", "target": "hello"}
        assert sample_key(x) == sample_key(y)
        y.custom = {**y.custom, "target": "hello there"}
        assert sample_key(x) != sample_key(y)  # another target: another sample
