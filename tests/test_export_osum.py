"""OSUM/WeNet export on real recorded speech: raw list and tar shards round-trip through the reader.

Audio comes from Debian's asterisk-core-sounds-en-wav (8 kHz prompts by one female speaker); 16 kHz
cases use copies resampled into tmp_path.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.utils import compute_num_samples

from osum_data.demo import SOUNDS_DIR, asterisk_transcripts
from osum_data.export import export_osum, read_data_list, read_shards
from osum_data.export.osum import safe_name
from osum_data.export.osum_audit import check_osum_export
from osum_data.export.osum_dialect import DialectError, convert, load_dialect, scan
from osum_data.export.osum_reader import MEMBER_FIELDS
from osum_data.export.osum_weights import (
    Realised,
    compare_shares,
    expand_like_osum,
    realised,
    shards_taken,
    whole_copies,
)
from osum_data.manifest_io import read_jsonl

SR = 16000


def transcripts() -> dict[str, str]:
    return asterisk_transcripts()


def copy_16k(name: str, out_dir: Path) -> Recording:
    """A 16 kHz int16 copy of an 8 kHz prompt, as a whole-file recording."""
    audio = Recording.from_file(SOUNDS_DIR / f"{name}.wav").resample(SR).load_audio()[0]
    path = out_dir / f"{name}-16k.wav"
    sf.write(path, audio, SR, subtype="PCM_16")
    return Recording.from_file(path, recording_id=f"{name}-16k")


def task_cut(
    rec: Recording,
    key: str,
    text: str,
    *,
    offset: float = 0.0,
    duration: float | None = None,
    task: str | None = "<TRANSCRIBE>",
    target: str | None = None,
    emotion: str | None = None,
) -> MonoCut:
    """A templated task sample the way the template stage leaves it (task=None: untemplated)."""
    dur = rec.duration - offset if duration is None else duration
    sup_custom = {"age": "adult"} | ({"emotion": emotion} if emotion else {})
    sup = SupervisionSegment(
        id=key,
        recording_id=rec.id,
        start=0.0,
        duration=dur,
        channel=0,
        text=text,
        language="English",
        speaker="allison",
        gender="female",
        custom=sup_custom,
    )
    custom = (
        None
        if task is None
        else {
            "task": task,
            "target": target or text,
            "instruction": "Transcribe the audio.",
        }
    )
    return MonoCut(
        id=key, start=offset, duration=dur, channel=0, recording=rec, supervisions=[sup], custom=custom
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[MonoCut]]:
    root = tmp_path_factory.mktemp("corpus")
    text = transcripts()
    rec8 = {
        n: Recording.from_file(SOUNDS_DIR / f"{n}.wav")
        for n in ("agent-loginok", "agent-pass", "auth-thankyou", "activated", "all-circuits-busy-now")
    }
    busy16 = copy_16k("all-circuits-busy-now", root)
    thanks16 = copy_16k("auth-thankyou", root)
    cuts = [
        task_cut(rec8["agent-loginok"], "allison/agent-loginok", text["agent-loginok"]),
        task_cut(rec8["agent-pass"], "agent-pass.seg.1", "password", offset=0.5, duration=1.25),
        task_cut(busy16, "busy-16k", text["all-circuits-busy-now"]),
        task_cut(rec8["auth-thankyou"], "thanks-resampled", text["auth-thankyou"]).resample(SR),
        task_cut(
            rec8["activated"],
            "activated.emotion",
            text["activated"],
            task="<TRANSCRIBE> <EMOTION>",
            target=f"{text['activated']}<HAPPY>",
            emotion="happy",
        ),
        task_cut(busy16, "busy-16k-seg", "circuits", offset=0.25, duration=0.8),
        task_cut(thanks16, "untemplated", text["auth-thankyou"], task=None),
        task_cut(rec8["all-circuits-busy-now"], "ключ ü/8k", text["all-circuits-busy-now"]),
    ]
    path = root / "cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    return path, cuts


@pytest.fixture(scope="module")
def exported(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    report = export_osum(corpus[0], out, shards=True, shard_size=3)
    return out, report


def expected_audio(cut: MonoCut) -> np.ndarray:
    return cut.resample(SR).load_audio()[0]


def check_samples(samples, cuts: list[MonoCut]) -> None:
    # Tar keys are safe names; the original id is kept in extra.cut_id when it differs.
    assert [s.extra.get("cut_id", s.key) for s in samples] == [c.id for c in cuts]
    assert all(s.key in (c.id, safe_name(c.id)) for s, c in zip(samples, cuts, strict=True))
    for s, cut in zip(samples, cuts, strict=True):
        custom = cut.custom or {"task": "<TRANSCRIBE>", "target": cut.supervisions[0].text}
        assert (s.txt, s.task) == (custom["target"], custom["task"])
        assert (s.lang, s.speaker, s.gender) == ("English", "allison", "female")
        assert s.emotion == (cut.supervisions[0].custom.get("emotion") or "")
        # the default dialect (echat) carries age and gender as its tags in extra
        assert s.extra["age"] == "<ADULT>" and s.extra["gender"] == "<FEMALE>"
        assert s.extra["recording_id"] == cut.recording_id
        assert s.extra.get("instruction") == (cut.custom or {}).get("instruction")
        assert s.sampling_rate == SR and s.audio.dtype == np.float32
        assert abs(s.duration - cut.duration) < 1e-3
        ref = expected_audio(cut)
        assert len(s.audio) == len(ref) == compute_num_samples(cut.duration, SR)
        np.testing.assert_allclose(s.audio, ref, atol=1.01 / 32768)


def test_raw_list_round_trip(corpus, exported):
    out, report = exported
    cuts = corpus[1]
    lines = [json.loads(x) for x in (out / "data.list").read_text(encoding="utf-8").splitlines()]
    assert [list(x) for x in lines] == [
        ["key", "wav", "txt", "task", "lang", "speaker", "emotion", "gender", "extra"]
    ] * len(cuts)
    check_samples(list(read_data_list(out / "data.list")), cuts)
    assert report.cuts == report.exported == len(cuts) and report.rejected == 0
    assert report.hours == pytest.approx(sum(c.duration for c in cuts) / 3600, abs=1e-6)
    assert "Exported 8 of 8 cuts" in report.summary()


def test_whole_16k_files_are_referenced_others_materialised(corpus, exported):
    out, report = exported
    wav = {x["key"]: x["wav"] for x in read_jsonl(out / "data.list")}
    referenced = {"busy-16k", "untemplated"}
    for cut in corpus[1]:
        if cut.id in referenced:
            assert wav[cut.id] == str(Path(cut.recording.sources[0].source).absolute())
        else:
            path = Path(wav[cut.id])
            assert path.parent == out / "wav" and path.name == safe_name(cut.id) + ".wav"
            info = sf.info(path)
            assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
    assert (report.referenced, report.materialised) == (2, 6)
    assert "/" not in safe_name("allison/agent-loginok") != safe_name("allison_agent-loginok")


def test_shards_round_trip_and_layout(corpus, exported):
    out, report = exported
    cuts = corpus[1]
    listed = (out / "shards_list.txt").read_text().splitlines()
    assert listed == [str(out / "shards" / f"shard_{i:06d}.tar") for i in range(3)]
    assert report.shards == 3 and all(Path(p).is_absolute() for p in listed)
    names = []
    for p in listed:
        with tarfile.open(p) as tar:
            members = tar.getmembers()
        assert all(
            (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o644) for m in members
        )
        names.append([m.name for m in members])
    keys = [safe_name(c.id) for c in cuts]
    assert any(k != c.id for k, c in zip(keys, cuts, strict=True))  # ids with '/' are renamed
    expected = [f"{k}.{f}" for k in keys for f in MEMBER_FIELDS]
    assert [len(n) for n in names] == [27, 27, 18]
    assert sum(names, []) == expected
    samples = list(read_shards(out / "shards_list.txt"))
    check_samples(samples, cuts)
    raw = list(read_data_list(out / "data.list"))
    for a, b in zip(samples, raw, strict=True):
        assert np.array_equal(a.audio, b.audio) and a.extra == b.extra


def test_export_is_byte_identical(corpus, exported, tmp_path):
    out, _ = exported
    files = [
        "data.list",
        "rejects.jsonl.gz",
        "shards_list.txt",
        *sorted(str(p.relative_to(out)) for p in [*out.glob("shards/*.tar"), *out.glob("wav/*.wav")]),
    ]
    before = {f: (out / f).read_bytes() for f in files}
    export_osum(corpus[0], out, shards=True, shard_size=3, num_workers=2)  # order kept with a pool
    assert {f: (out / f).read_bytes() for f in files} == before
    assert sorted(p.name for p in out.glob("shards/*")) == [f"shard_{i:06d}.tar" for i in range(3)]


def test_bad_cuts_are_rejected_with_reasons(tmp_path):
    text = transcripts()
    gone = tmp_path / "gone.wav"
    gone.write_bytes((SOUNDS_DIR / "activated.wav").read_bytes())
    rec = Recording.from_file(SOUNDS_DIR / "agent-loginok.wav")
    cuts = [
        task_cut(Recording.from_file(gone), "deleted", text["activated"]),
        task_cut(rec, "good", text["agent-loginok"]),
        task_cut(rec, "no-target", text["agent-loginok"]),
        task_cut(rec, "bad-label", "x", task="<TRANSCRIBE> <EMOTION>", target="x<MALE>"),
        task_cut(rec, "good", text["agent-loginok"]),  # duplicate id
        task_cut(rec, "negstart", text["agent-loginok"], offset=-5.0, duration=1.0),
        task_cut(rec, "overlong", text["agent-loginok"], offset=0.0, duration=rec.duration + 5),
    ]
    del cuts[2].custom["target"]
    CutSet.from_cuts(cuts).to_file(tmp_path / "cuts.jsonl.gz")
    gone.unlink()
    report = export_osum(tmp_path / "cuts.jsonl.gz", tmp_path / "out", shards=True)
    assert (report.cuts, report.exported, report.rejected) == (7, 1, 6)
    rejects = {r["id"]: r["custom"]["reject"] for r in read_jsonl(tmp_path / "out" / "rejects.jsonl.gz")}
    assert list(rejects) == ["deleted", "no-target", "bad-label", "good", "negstart", "overlong"]
    assert all(r["stage"] == "export_osum" for r in rejects.values())
    assert rejects["deleted"]["reason"] == f"audio: FileNotFoundError: no such file: {gone}"
    assert rejects["no-target"]["reason"] == "missing target"
    assert rejects["bad-label"]["reason"].startswith("bad target:")
    assert rejects["good"]["reason"].startswith("duplicate key")
    # defect 28: a span outside the recording is a reject, and every reject carries its code
    assert rejects["negstart"]["reason"] == "bad span: cut starts at -5 s, before its recording"
    assert rejects["overlong"]["reason"].startswith("bad span: cut ends at")
    codes = {k: r["code"] for k, r in rejects.items()}
    assert codes == {
        "deleted": "audio",
        "no-target": "missing_target",
        "bad-label": "bad_target",
        "good": "duplicate_key",
        "negstart": "bad_span",
        "overlong": "bad_span",
    }
    assert [s.key for s in read_shards(tmp_path / "out" / "shards_list.txt")] == ["good"]
    assert report.reasons == {
        "audio": 1,
        "bad span": 2,
        "bad target": 1,
        "duplicate key": 1,
        "missing target": 1,
    }
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rejected_by_reason"] == {
        "audio": 1,
        "bad_span": 2,
        "bad_target": 1,
        "duplicate_key": 1,
        "missing_target": 1,
    }
    assert "Rejected 6" in report.summary()


def test_export_refuses_its_input_folder_and_a_broken_summary(tmp_path):
    """Defects 1 and 18: OUT that is (or holds) the input's folder is refused before anything is
    written; a run or mix folder whose summary.json is broken says so."""
    from osum_data.export.formats import ExportInputError, export

    run = tmp_path / "run"
    run.mkdir()
    rec = Recording.from_file(SOUNDS_DIR / "agent-loginok.wav")
    CutSet.from_cuts([task_cut(rec, "a", "x")]).to_file(run / "cuts.jsonl.gz")
    (run / "summary.json").write_text('{"type": "run"}')
    before = {p: p.read_bytes() for p in run.iterdir()}
    for fmt in ("osum", "nemo"):
        for cuts, out in ((run, run), (run / "cuts.jsonl.gz", tmp_path)):
            with pytest.raises(ExportInputError, match=f"export folder {out} is \\(or holds\\) {run}"):
                export(fmt, cuts, out)
    with pytest.raises(ExportInputError, match="is \\(or holds\\)"):
        export_osum(run / "cuts.jsonl.gz", run)
    assert {p: p.read_bytes() for p in run.iterdir()} == before
    (run / "summary.json").write_text("{broken")
    with pytest.raises(ExportInputError, match=f"^{run}/summary.json: not valid JSON \\(Expecting"):
        export("nemo", run, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_samples_reject_a_span_outside_the_recording():
    """Defect 28 for NeMo, HF and ShareGPT: their shared sample builder rejects with `bad_span`."""
    from osum_data.export.samples import to_sample
    from osum_data.run.stage import Reject

    rec = Recording.from_file(SOUNDS_DIR / "agent-loginok.wav")
    for cut in (
        task_cut(rec, "neg", "x", offset=-5.0, duration=1.0),
        task_cut(rec, "long", "x", duration=rec.duration + 1),
    ):
        with pytest.raises(Reject) as e:
            to_sample(cut)
        assert e.value.code == "bad_span" and "recording" in str(e.value)
    assert to_sample(task_cut(rec, "ok", "x", duration=rec.duration)).id == "ok"


def test_reader_rejects_invalid_samples(exported, tmp_path):
    out, _ = exported
    good = json.loads((out / "data.list").read_text(encoding="utf-8").splitlines()[0])
    cases = {
        "unknown task": {"task": "<TRANSCRIBE> <MOOD>"},
        "does not parse": {"task": "<TRANSCRIBE> <EMOTION>"},
        "sampling rate 8000": {"wav": str(SOUNDS_DIR / "agent-loginok.wav")},
    }
    for message, change in cases.items():
        path = tmp_path / "data.list"
        path.write_text(json.dumps(good | change | {"key": "bad/key"}) + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=f"'bad/key'.*{message}"):
            list(read_data_list(path))
    shard = tmp_path / "odd.tar"
    with tarfile.open(shard, "w") as tar:
        info = tarfile.TarInfo("utt.1.mystery")
        tar.addfile(info, io.BytesIO(b""))
    (tmp_path / "list.txt").write_text(f"{shard}\n")
    with pytest.raises(ValueError, match="no known field suffix"):
        list(read_shards(tmp_path / "list.txt"))


def test_2500_cuts_make_three_shards(tmp_path):
    recs = [copy_16k(n, tmp_path) for n in ("activated", "auth-thankyou", "agent-loginok")]
    cuts = (task_cut(recs[i % 3], f"utt{i:05d}", "hello") for i in range(2500))
    CutSet.from_cuts(cuts).to_file(tmp_path / "cuts.jsonl.gz")
    report = export_osum(tmp_path / "cuts.jsonl.gz", tmp_path / "out", shards=True)
    assert (report.exported, report.shards, report.referenced) == (2500, 3, 2500)
    sizes = []
    for p in (tmp_path / "out" / "shards_list.txt").read_text().splitlines():
        with tarfile.open(p) as tar:
            names = tar.getnames()
        assert len(names) % len(MEMBER_FIELDS) == 0
        sizes.append(len(names) // len(MEMBER_FIELDS))
    assert sizes == [1000, 1000, 500]
    assert not (tmp_path / "out" / "wav").exists()


def test_tar_members_never_leave_their_folder_and_clashing_names_are_rejected(tmp_path):
    text = transcripts()
    rec = Recording.from_file(SOUNDS_DIR / "agent-loginok.wav")
    ids = ["sub/../../evil", "/abs/path", "..hidden", "Same", "same"]
    cuts = [task_cut(rec, i, text["agent-loginok"]) for i in ids]
    manifest = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(manifest)
    out = tmp_path / "export"
    report = export_osum(manifest, out, shards=True)
    assert (report.exported, report.rejected) == (4, 1)
    (rej,) = read_jsonl(out / "rejects.jsonl.gz")
    assert rej["id"] == "same" and "name clash" in rej["custom"]["reject"]["reason"]
    with tarfile.open(out / "shards" / "shard_000000.tar") as tar:
        names = tar.getnames()
    assert all("/" not in n and not n.startswith(".") for n in names), names
    keys = {s.extra.get("cut_id", s.key) for s in read_shards(out / "shards_list.txt")}
    assert keys == {"sub/../../evil", "/abs/path", "..hidden", "Same"}
    assert all(p.parent == out / "wav" for p in out.glob("wav/*"))


def test_re_export_into_the_same_folder_leaves_nothing_of_the_old_one(tmp_path):
    text = transcripts()
    rec = Recording.from_file(SOUNDS_DIR / "agent-loginok.wav").resample(8000)
    manifest = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts([task_cut(rec, f"u{i}", text["agent-loginok"]) for i in range(5)]).to_file(manifest)
    out = tmp_path / "export"
    export_osum(manifest, out, shards=True, shard_size=2)
    assert len(list(out.glob("wav/*.wav"))) == 5 and len(list(out.glob("shards/*.tar"))) == 3
    CutSet.from_cuts([task_cut(rec, "other", text["agent-loginok"])]).to_file(manifest)
    export_osum(manifest, out, shards=False)
    assert [p.name for p in out.glob("wav/*.wav")] == ["other.wav"]
    assert not list(out.glob("shards/*.tar")) and not (out / "shards_list.txt").exists()


# --- issue 16: OSUM's weighting rule, dialects, prompt_config.yaml, the export audit ----------------


def test_osum_weight_rule_matches_cases_worked_from_its_source():
    """handle_data_for_weight.py: int(float(w)) copies of every shard; when that is 0,
    int(len(shards) * w) random shards. Cases worked by hand from that source."""
    assert whole_copies("6.16") == 6 and whole_copies(4.49) == 4 and whole_copies(0.99) == 0
    assert shards_taken(0.433, 1) == 0  # the asr.asr: 1 shard at 0.433 -> nothing
    assert shards_taken(0.450, 2) == 0  # srwt: 2 shards at 0.45 -> int(0.9) = 0
    assert shards_taken(0.5, 4) == 2 and shards_taken(0.26, 4) == 1
    assert shards_taken(2.9, 3) == 6  # the fraction of a weight >= 1 is dropped
    assert shards_taken(3, 5) == 15
    # fraction over unequal shards: 2 of [3, 1, 2, 2] -> between 1+2 and 3+2 cuts
    assert realised(0.5, [3, 1, 2, 2]) == Realised(2, 3.0, 5.0)
    assert realised(2, [3, 1]) == Realised(4, 8.0, 8.0)
    lists = {"a": ["a1", "a2"], "b": ["b1"], "c": ["c1", "c2", "c3", "c4"]}
    config = {
        "A": {"path": "a", "weight": 2},
        "B": {"path": "b", "weight": 0.433},
        "C": {"path": "c", "weight": 0.5},
    }
    got = expand_like_osum(config, lists.__getitem__)
    assert sorted(x for x in got if x[0] == "a") == ["a1", "a1", "a2", "a2"]
    assert not [x for x in got if x[0] == "b"]  # dropped, as OSUM drops it
    assert len([x for x in got if x[0] == "c"]) == 2 and len(set(x for x in got if x[0] == "c")) == 2
    assert got == expand_like_osum(config, lists.__getitem__)  # OSUM's fixed seed: the same list


def test_the_old_fractional_weights_drop_tasks_under_osums_rule():
    """The demo's old data_config (weight = the mix's factor): OSUM's rule drops asr and srwt and
    truncates the rest, so the check that guards the export fails it."""
    old = {  # task -> (weight, shard sizes) as the old export wrote them; the mix planned 216 each
        "asr": (0.433, [499]),
        "srwt": (0.450, [250, 230]),
        "sap": (6.16, [35]),
        "ser": (4.49, [48]),
    }
    got = {t: realised(w, sizes) for t, (w, sizes) in old.items()}
    shares = {s.task: s for s in compare_shares({t: 216.0 for t in old}, got)}
    assert shares["asr"].dropped and shares["srwt"].dropped and not shares["asr"].ok
    assert not shares["sap"].ok  # 6 * 35 of 216 planned, the others gone: far off its share


def test_v1_dialect_refuses_x_only_keys_and_echat_takes_its_tags():
    v1, echat = load_dialect("osum"), load_dialect("echat")
    with pytest.raises(DialectError, match=r"dialect osum has no task key <GENDER>.*X-only"):
        convert(v1, "<GENDER>", "<FEMALE>")
    for key, target in (("<EMOTION>", "<HAPPY>"), ("<CAPTION>", "<LAUGH>"), ("<AGE>", "<ADULT>")):
        with pytest.raises(DialectError, match="no task key"):
            convert(v1, key, target)
    with pytest.raises(DialectError, match="has no field that carries one"):
        convert(v1, "<QA_OPEN>", "a dog barks", instruction="What do you hear?")
    # echat: answer tag <ANGER>, never <ANGRY>; age and gender as its tags in extra
    txt, extra = convert(echat, "<TRANSCRIBE> <EMOTION>", "stop it<ANGRY>", age="adult", gender="female")
    assert txt == "stop it<ANGER>" and extra == {"age": "<ADULT>", "gender": "<FEMALE>"}
    assert "<ANGRY>" not in echat.all_tags()
    assert convert(echat, "<EMOTION>", "<ANGRY>")[0] == "<ANGER>"
    assert convert(v1, "<TRANSCRIBE> <AGE> <GENDER>", "hi<OLD><MALE>") == ("hi<OLD><MALE>", {})
    with pytest.raises(DialectError, match="emotion label 'other' has no tag in dialect echat"):
        convert(echat, "<EMOTION>", "<OTHER>")
    txt, extra = convert(echat, "<QA_OPEN>", "a dog barks", instruction="What do you hear?")
    assert extra == {"question": "What do you hear?"}
    with pytest.raises(DialectError, match="reasoning"):
        convert(echat, "<EMOTION>", "<think>loud and fast</think><ANGRY>")


def _raw(cut_id: str, key: str, target: str) -> dict:
    sup = {
        "id": cut_id,
        "text": "stop it",
        "language": "English",
        "gender": "female",
        "custom": {"age": "adult"},
    }
    return {
        "id": cut_id,
        "supervisions": [sup],
        "custom": {"task": key, "target": target, "instruction": "x"},
    }


def test_scan_names_the_refused_cut_before_any_work():
    items = [_raw("ok-1", "<TRANSCRIBE>", "stop it"), _raw("xonly-7", "<GENDER>", "<FEMALE>")]
    with pytest.raises(
        DialectError, match=r"1 cut\(s\) cannot be exported for dialect osum.*'xonly-7'.*<GENDER>"
    ):
        scan(items, load_dialect("osum"), "cuts.jsonl.gz")
    assert scan(items, load_dialect("echat"), "cuts.jsonl.gz") == {"<TRANSCRIBE>": ["en"], "<GENDER>": ["en"]}


def test_export_ships_a_prompt_config_for_every_key_and_audits_clean(exported):
    out, _ = exported
    import yaml

    from osum_data.tasks import prompt_pool

    config = yaml.safe_load((out / "prompt_config.yaml").read_text(encoding="utf-8"))
    keys = {json.loads(x)["task"] for x in (out / "data.list").read_text(encoding="utf-8").splitlines()}
    assert keys == {"<TRANSCRIBE>", "<TRANSCRIBE> <EMOTION>"} and set(config) == keys
    for key in keys:  # English speech: the English pool, whole
        assert config[key] == list(prompt_pool("en")[key])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dialect"] == "echat" and set(summary["prompt_keys"]) == keys
    rows = check_osum_export(out)
    assert not [r for r in rows if r["status"] == "fail"], rows
    assert {r["check"] for r in rows} >= {"dialect_keys", "dialect_tags", "prompt_config", "instructions"}


def test_audit_fails_an_angry_tag_an_uncovered_key_and_a_missing_prompt_config(exported, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(exported[0], out)
    lines = [json.loads(x) for x in (out / "data.list").read_text(encoding="utf-8").splitlines()]
    emo = next(x for x in lines if x["task"] == "<TRANSCRIBE> <EMOTION>")
    emo["txt"] = emo["txt"].replace("<HAPPY>", "<ANGRY>")
    gender = dict(lines[0], key="g1", task="<GENDER>", txt="<FEMALE>")
    (out / "data.list").write_text("".join(json.dumps(x) + "\n" for x in [*lines, gender]), encoding="utf-8")
    rows = {(r["check"], r["task"]): r for r in check_osum_export(out)}
    assert rows[("dialect_tags", "<TRANSCRIBE> <EMOTION>")]["status"] == "fail"
    assert "<ANGRY>" in rows[("dialect_tags", "<TRANSCRIBE> <EMOTION>")]["detail"]
    assert rows[("prompt_config", "<GENDER>")]["status"] == "fail"  # no instructions for this key
    assert rows[("leading_tag", "<GENDER>")]["status"] == "warn"
    (out / "prompt_config.yaml").unlink()
    assert any(
        r["check"] == "prompt_config" and r["status"] == "fail" and r["task"] == ""
        for r in check_osum_export(out)
    )
    summary = json.loads((out / "summary.json").read_text())
    (out / "summary.json").write_text(json.dumps(dict(summary, dialect="osum")))
    rows = {(r["check"], r["task"]): r for r in check_osum_export(out)}
    assert rows[("dialect_keys", "<GENDER>")]["status"] == "fail"


def test_v1_export_refuses_x_only_samples_before_writing_anything(tmp_path):
    rec = Recording.from_file(SOUNDS_DIR / "agent-pass.wav")
    cuts = [
        task_cut(rec, "plain", "password"),
        task_cut(rec, "xonly", "password", task="<GENDER>", target="<FEMALE>"),
    ]
    CutSet.from_cuts(cuts).to_file(tmp_path / "cuts.jsonl.gz")
    with pytest.raises(DialectError, match=r"dialect osum.*'xonly'.*<GENDER>"):
        export_osum(tmp_path / "cuts.jsonl.gz", tmp_path / "out", dialect="osum")
    assert not (tmp_path / "out" / "data.list").exists()


def test_echat_export_writes_anger_and_reads_back(tmp_path):
    rec = Recording.from_file(SOUNDS_DIR / "agent-pass.wav")
    cut = task_cut(
        rec, "angry", "password", task="<TRANSCRIBE> <EMOTION>", target="password<ANGRY>", emotion="angry"
    )
    CutSet.from_cuts([cut]).to_file(tmp_path / "cuts.jsonl.gz")
    export_osum(tmp_path / "cuts.jsonl.gz", tmp_path / "out", shards=True)
    (sample,) = read_shards(tmp_path / "out" / "shards_list.txt")  # the reader validates the target
    assert sample.txt == "password<ANGER>" and sample.extra["gender"] == "<FEMALE>"
    assert not [r for r in check_osum_export(tmp_path / "out") if r["status"] == "fail"]


def test_a_task_the_rule_would_drop_or_skew_fails_the_mix_export_by_name(tmp_path):
    from osum_data.export.osum_config import OsumMixError, check_shares

    planned = {"asr": 216.0, "srwt": 216.0, "sap": 216.0}
    exact = {"asr": Realised(1, 216, 216), "srwt": Realised(2, 216, 216), "sap": Realised(9, 216, 216)}
    assert all(s.ok for s in check_shares(planned, exact, "cuts", tmp_path / "rejects.jsonl.gz"))
    dropped = dict(exact, srwt=Realised(0, 0, 0))
    with pytest.raises(OsumMixError, match=r"task 'srwt' planned 216 cuts \(33.33%\), dropped"):
        check_shares(planned, dropped, "cuts", tmp_path / "rejects.jsonl.gz")
    skewed = dict(exact, sap=Realised(9, 230, 230))  # 6.5 % more sap: every share moves
    with pytest.raises(OsumMixError, match="task 'sap'"):
        check_shares(planned, skewed, "cuts", tmp_path / "rejects.jsonl.gz")
    near = dict(exact, sap=Realised(9, 219, 219))  # within 2 %
    assert all(s.ok for s in check_shares(planned, near, "cuts", tmp_path / "rejects.jsonl.gz"))


def test_osum_export_input_lines_are_rejected_with_codes_and_a_truncated_gzip_is_exit_1(tmp_path):
    """Issue 19: the pre-scan's rejects are `Reject`s with their code (not parsed back out of the
    reason); a line that is not UTF-8 is a reject, not the end of the export; a truncated gzip is a
    runtime failure (exit code 1) naming the file."""
    from osum_data.export.osum import _items
    from osum_data.manifest_io import ManifestReadError

    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"id": "a"}\n\xff\xfe\n[1]\n{"id": "a"}\n{"id": "A"}\n')
    items = list(_items(path))
    codes = [r.code if r else None for _, r in items]
    assert codes == [None, "not_utf8", "bad_cut", "duplicate_key", "name_clash"]
    assert items[1][1].detail.startswith("not utf8: input line 2")
    gz = tmp_path / "in.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes() * 50)[:-20])
    with pytest.raises(ManifestReadError, match=r"cuts manifest .*in\.jsonl\.gz is truncated") as e:
        list(_items(gz))
    assert e.value.exit_code == 1
