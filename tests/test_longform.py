"""Long-form segmentation: silero VAD on real speech with pauses at known places, splitting at
pauses, `prepare longform`, and the pyannote diarisation plumbing with a tiny model built here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from lhotse import CutSet

from osum_data.corpora import prepare
from osum_data.demo.joined import join_prompts, longform_recording
from osum_data.label.longform.diarize import Diarize, annotation_turns, chunk_bounds
from osum_data.label.longform.segments import Segment
from osum_data.label.longform.vad import SileroVAD, plan_segments
from osum_data.run.config import build_config
from osum_data.run.stage import StageContext
from osum_data.yaml_config import ConfigError


@pytest.fixture(scope="module")
def long_cut(tmp_path_factory):
    """One recording of 5 sentence prompts separated by 0.8-2 s pauses, via `prepare longform`."""
    root = tmp_path_factory.mktemp("long")
    audio_dir = longform_recording(root, n_prompts=5, seed=1)
    (audio_dir / "broken.wav").write_bytes(b"RIFF....not audio")
    report = prepare("longform", audio_dir, root / "import")
    assert (report.rows, report.cuts, report.rejected) == (2, 1, 1)
    assert list(report.rejects_by_reason) == ["unreadable_audio"]
    (cut,) = CutSet.from_file(root / "import" / "cuts.jsonl.gz")
    assert cut.id == "long_000" and not cut.supervisions and cut.custom["kind"] == "longform"
    return cut, json.loads((root / "reference.json").read_text())


def ctx(tmp_path: Path) -> StageContext:
    return StageContext(0, 0, tmp_path, "segment")


def test_vad_finds_the_known_pauses_within_100_ms(long_cut, tmp_path):
    cut, reference = long_cut
    res = SileroVAD(padding=0.0, min_duration=0.3)([cut], ctx(tmp_path))
    assert not res.rejected
    got = [(c.custom["segment"]["start"], c.custom["segment"]["end"]) for c in res.kept]
    assert len(got) == len(reference) == 5
    for (s, e), ref in zip(got, reference, strict=True):
        assert abs(s - ref["start"]) <= 0.1 and abs(e - ref["end"]) <= 0.1, (s, e, ref)
    seg = res.kept[0]
    assert seg.custom["source_cut_id"] == "long_000" and seg.recording_id == cut.recording_id
    assert seg.load_audio().shape[1] == pytest.approx(seg.duration * cut.sampling_rate, abs=2)
    assert res.counters["segments"] == 5


def test_vad_in_windows_finds_what_the_whole_recording_gives(long_cut, tmp_path):
    """Read in 22 s windows (as hours-long recordings are, 600 s each), the 28 s recording gives the
    same segments as read whole: no region is cut at a window edge."""
    cut, reference = long_cut
    whole = SileroVAD(padding=0.0, min_duration=0.3, max_duration=12.0)([cut], ctx(tmp_path))
    windowed = SileroVAD(padding=0.0, min_duration=0.3, max_duration=12.0, window=22.0)([cut], ctx(tmp_path))
    assert whole.counters["windows"] == 1 and windowed.counters["windows"] >= 2
    got = [(c.custom["segment"]["start"], c.custom["segment"]["end"]) for c in windowed.kept]
    want = [(c.custom["segment"]["start"], c.custom["segment"]["end"]) for c in whole.kept]
    assert len(got) == len(want) == len(reference)
    for (s, e), (ws, we) in zip(got, want, strict=True):
        assert abs(s - ws) <= 0.05 and abs(e - we) <= 0.05, (s, e, ws, we)


def test_vad_window_too_short_for_its_segments_is_refused_before_work():
    from osum_data.run.config import load_pipeline

    with pytest.raises(ConfigError, match=r"stage 'segment': window 25.0 is too short: give at least 30.0 s"):
        load_pipeline(Path(__file__).resolve().parents[1] / "pipelines/longform.yaml", ["segment.window=25"])


def test_vad_padding_stays_inside_pauses_and_long_runs_split_at_the_longest_pause(long_cut, tmp_path):
    cut, reference = long_cut
    padded = SileroVAD(padding=0.2, min_duration=0.3)([cut], ctx(tmp_path)).kept
    for c, ref in zip(padded, reference, strict=True):
        assert ref["start"] - 0.3 <= c.custom["segment"]["start"] <= ref["start"]
    # joining everything (split_pause 3 s) but capping just above the longest prompt: the splits fall
    # in the pauses between prompts, never inside one
    cap = max(r["end"] - r["start"] for r in reference) + 1.0
    capped = SileroVAD(padding=0.0, min_duration=0.3, split_pause=3.0, max_duration=cap)([cut], ctx(tmp_path))
    capped = capped.kept
    assert len(capped) >= 2 and all(c.duration <= cap for c in capped)
    edges = {round(r["start"], 1) for r in reference} | {round(r["end"], 1) for r in reference}
    for c in capped:
        for t in (c.custom["segment"]["start"], c.custom["segment"]["end"]):
            assert min(abs(t - x) for x in edges) <= 0.15


def test_plan_segments_rules():
    regions = [(1.0, 3.0), (3.2, 5.0), (6.5, 9.0), (9.3, 12.0)]
    # pauses under 0.5 s join; 1.5 s pause splits; padding at most half a pause and inside the file
    assert plan_segments(regions, 12.05, 0.5, 20.0, 0.3) == [Segment(0.7, 5.3), Segment(6.2, 12.05)]
    # one run of 11 s with max 6 s: split at its longest pause (1.5 s) only
    one = plan_segments(regions, 13.0, 2.0, 6.0, 0.0)
    assert [(s.start, s.end) for s in one] == [(1.0, 5.0), (6.5, 12.0)]
    # max 5 s: the 5.5 s half is split again, at its own longest pause (0.3 s)
    two = plan_segments(regions, 13.0, 2.0, 5.0, 0.0)
    assert [(s.start, s.end) for s in two] == [(1.0, 5.0), (6.5, 9.0), (9.3, 12.0)]


def test_diarize_without_a_pipeline_folder_says_what_to_download(tmp_path):
    raw = {
        "imports": ["osum_data.label.longform"],
        "stages": [{"stage": "diarize", "pipeline": str(tmp_path / "nothing")}],
    }
    with pytest.raises(
        ConfigError, match=r"hf download pyannote/speaker-diarization-community-1 --local-dir"
    ):
        build_config(raw, "p.yaml")


def test_annotation_to_turns_and_chunks():
    from pyannote.core import Annotation
    from pyannote.core import Segment as PSegment

    ann = Annotation()
    ann[PSegment(0.5, 2.0)] = "SPEAKER_00"
    ann[PSegment(1.5, 3.0)] = "SPEAKER_01"
    turns = annotation_turns(ann, 10.0, "rec:c1:")
    assert turns == [Segment(10.5, 12.0, "rec:c1:SPEAKER_00"), Segment(11.5, 13.0, "rec:c1:SPEAKER_01")]
    assert chunk_bounds(16000 * 10, 4.0) == [(0, 64000), (64000, 128000), (128000, 160000)]
    assert chunk_bounds(136000, 4.0) == [(0, 64000), (64000, 136000)]  # a 0.5 s tail joins the chunk before


def _save(model, folder: Path) -> None:
    """A pyannote checkpoint as the hub ships it (pytorch_model.bin with pyannote's metadata)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    import lightning

    ckpt = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    model.on_save_checkpoint(ckpt)
    torch.save(ckpt, folder / "pytorch_model.bin")


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory) -> Path:
    """A speaker-diarisation pipeline folder in community-1's layout with tiny random models: a
    PyanNet segmentation (powerset, 3 speakers), an x-vector embedding and an identity PLDA."""
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import XVectorSincNet
    from pyannote.audio.models.segmentation import PyanNet

    out = tmp_path_factory.mktemp("pyannote")
    torch.manual_seed(0)
    seg = PyanNet(
        sincnet={"stride": 10},
        lstm={"hidden_size": 16, "num_layers": 1, "bidirectional": True},
        linear={"hidden_size": 16, "num_layers": 1},
    )
    seg.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION,
        resolution=Resolution.FRAME,
        duration=2.0,
        min_duration=2.0,
        warm_up=(0.0, 0.0),
        classes=["a", "b", "c"],
        powerset_max_classes=2,
        permutation_invariant=True,
    )
    seg.setup()
    _save(seg, out / "segmentation")
    emb = XVectorSincNet(sincnet={"stride": 10}, dimension=32)
    emb.specifications = Specifications(
        problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=2.0
    )
    emb.setup()
    _save(emb, out / "embedding")
    (out / "plda").mkdir()
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(32, 16)))
    np.savez(out / "plda" / "xvec_transform.npz", mean1=np.zeros(32), mean2=np.zeros(16), lda=q)
    np.savez(out / "plda" / "plda.npz", mu=np.zeros(16), tr=np.eye(16), psi=np.ones(16))
    config = {
        "pipeline": {
            "name": "pyannote.audio.pipelines.SpeakerDiarization",
            "params": {
                "segmentation": "$model/segmentation",
                "embedding": "$model/embedding",
                "plda": "$model/plda",
                "clustering": "AgglomerativeClustering",
                "segmentation_step": 0.5,
            },
        },
        "params": {
            "segmentation": {"min_duration_off": 0.0},
            "clustering": {"method": "centroid", "min_cluster_size": 1, "threshold": 0.7},
        },
    }
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    return out


def test_diarize_plumbing_with_a_tiny_local_pipeline(tiny_pipeline, tmp_path):
    """A random model says nothing true about who speaks; what is checked is the plumbing: the
    folder loads offline, chunks are offset, every turn becomes one derived single-speaker cut with
    the recording's speaker ids, overlaps are dropped or marked."""
    wav = tmp_path / "audio" / "two.wav"
    join_prompts(["vm-reachoper", "conf-invalid"], [0.3, 0.8, 0.3], wav)
    prepare("longform", wav.parent, tmp_path / "import")
    (cut,) = CutSet.from_file(tmp_path / "import" / "cuts.jsonl.gz")
    stage = Diarize(pipeline=str(tiny_pipeline), overlap="mark", min_duration=0.0, chunk_s=4.0)
    cut16 = cut.resample(16000)
    turns = stage.turns(cut16, cut.recording_id)
    direct = []  # the same chunks run straight through pyannote
    for k, (a, b) in enumerate(chunk_bounds(round(cut16.duration * 16000), 4.0)):
        import torch

        piece = cut16.truncate(offset=a / 16000, duration=(b - a) / 16000).load_audio()[0]
        assert len(piece) == b - a  # chunks are read alone, never the whole recording
        result = stage.pipeline({"waveform": torch.from_numpy(piece)[None], "sample_rate": 16000})
        direct += annotation_turns(result.speaker_diarization, a / 16000, f"two:c{k}:")
    assert turns == sorted(direct, key=lambda t: (t.start, t.end))
    res = stage([cut], StageContext(0, 0, tmp_path, "segment"))
    assert turns, "the tiny model (seed 0) gives turns on this recording"
    assert len(res.kept) == len(turns) and res.counters["turns"] == len(turns)
    for c, t in zip(res.kept, turns, strict=True):
        assert c.supervisions[0].speaker == t.speaker and t.speaker.startswith("two:c")
        assert c.custom["source_cut_id"] == "two" and c.custom["segment"]["source"] == "diarize"
        assert c.custom["segment"]["start"] == pytest.approx(t.start, abs=1e-3)
    dropped = Diarize(pipeline=str(tiny_pipeline), overlap="drop", min_duration=0.0, chunk_s=4.0)(
        [cut], ctx(tmp_path)
    )
    overlapped = sum(1 for c in res.kept if c.custom["segment"].get("overlap_s", 0) > 0)
    assert len(dropped.kept) == len(res.kept) - overlapped
