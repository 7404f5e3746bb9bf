"""Paralinguistic and noise corpora in their real on-disk layouts, with their metadata quirks.

Speech is the real Asterisk prompts (corpus_fixtures.write_speech); event clips and noises are
synthetic (shaped noise bursts), as the layouts and metadata formats are what these fixtures pin.
Video containers (MELD, RAVDESS, VoxCeleb2) are real mp4/m4a files made with the ffmpeg CLI.
Each builder returns a BuiltCorpus: the cuts an importer must make (id -> Want, with the labels in
Want.custom) and the rejects (id -> reason code).
"""

from __future__ import annotations

import codecs
import json
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.corpus_fixtures import BuiltCorpus, Want, prompt_text, write_speech


def write_noise(
    path: Path, seconds: float = 0.5, rate: int = 16000, channels: int = 1, seed: int = 0
) -> float:
    """A decaying noise burst (an 'event' or a noise/RIR stand-in); returns its duration."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    burst = rng.standard_normal((n, channels)) * np.exp(-np.linspace(0, 4, n))[:, None] * 0.3
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), burst.squeeze(), rate)
    return n / rate


def write_video(path: Path, prompt: str | None, audio: bool = True, ext_audio_only: bool = False) -> float:
    """An mp4 (black video + AAC speech), a video-only mp4 (audio=False) or an audio-only .m4a
    (ext_audio_only); returns the speech duration (0 without audio)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    args = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]
    if not audio:
        args += ["-f", "lavfi", "-i", "color=c=black:s=32x24:r=5:d=1", "-c:v", "libx264", str(path)]
        subprocess.run(args, check=True)
        return 0.0
    wav = path.with_suffix(".src.wav")
    duration = write_speech(wav, prompt or "activated", 16000)
    if ext_audio_only:
        args += ["-i", str(wav), "-c:a", "aac", str(path)]
    else:
        args += ["-f", "lavfi", "-i", f"color=c=black:s=32x24:r=5:d={duration:.3f}", "-i", str(wav)]
        args += ["-c:v", "libx264", "-c:a", "aac", "-shortest", str(path)]
    subprocess.run(args, check=True)
    wav.unlink()
    return duration


# ---------------------------------------------------------------------------------------------
# IEMOCAP: Session*/dialog/EmoEvaluation/*.txt + transcriptions + sentences/wav/<dialog>/<turn>.wav
# ---------------------------------------------------------------------------------------------

IEMOCAP_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def make_iemocap(base: Path) -> BuiltCorpus:
    root = base / "IEMOCAP_full_release"
    built = BuiltCorpus(root=base)
    dialogs = {  # (session, dialog): [(turn, emotion, prompt or None = no wav, has transcript)]
        ("Session1", "Ses01F_impro01"): [
            ("Ses01F_impro01_F000", "neu", "hello-world", True),
            ("Ses01F_impro01_M001", "xxx", "auth-thankyou", True),
            ("Ses01F_impro01_F002", "exc", "activated", True),
            ("Ses01F_impro01_M003", "fru", "calling", True),
            ("Ses01F_impro01_F004", "zzz", "cancelled", True),
            ("Ses01F_impro01_M005", "ang", None, True),
            ("Ses01F_impro01_F006", "sad", "vm-goodbye", False),
        ],
        ("Session2", "Ses02M_script01_1"): [
            ("Ses02M_script01_1_F000", "hap", "agent-pass", True),
            ("Ses02M_script01_1_M001", "oth", "all-circuits-busy-now", True),
        ],
    }
    emotion = {"neu": "neutral", "exc": "happy", "fru": "other", "hap": "happy", "oth": "other"}
    for (session, dialog), turns in dialogs.items():
        folder = root / session / "dialog"
        evaluation, transcript = [IEMOCAP_HEADER], []
        t = 6.2901
        for turn, emo, prompt, has_text in turns:
            evaluation.append(f"[{t:.4f} - {t + 2:.4f}]\t{turn}\t{emo}\t[2.5000, 3.0000, 3.5000]\n")
            evaluation.append("C-E2:\tNeutral;\t()\nA-E3:\tval 3; act 2; dom  2;\t()\n\n")
            text = prompt_text(prompt or "hello-world")
            if has_text:
                transcript.append(f"{turn} [{t:08.4f}-{t + 2:08.4f}]: {text}\n")
            t += 3
            sex = turn.rsplit("_", 1)[-1][0]
            if prompt is None:
                built.rejects[turn] = "missing_audio"
                continue
            duration = write_speech(root / session / "sentences" / "wav" / dialog / f"{turn}.wav", prompt)
            if emo == "zzz":
                built.rejects[turn] = "unknown_label"
            elif not has_text:
                built.rejects[turn] = "no_transcript"
            else:
                labels = {"emotion": emotion.get(emo, emo)} if emo != "xxx" else {"emotion_raw": "xxx"}
                gender = {"F": "female", "M": "male"}[sex]
                built.cuts[turn] = Want(text, duration, session, gender, custom=labels)
        transcript.append(f"{dialog}_MXX0 [000.0000-001.0000]: [LAUGHTER]\n")  # unevaluated turn
        (folder / "EmoEvaluation").mkdir(parents=True)
        (folder / "EmoEvaluation" / f"{dialog}.txt").write_text("".join(evaluation), encoding="utf-8")
        (folder / "EmoEvaluation" / "Categorical").mkdir()
        (folder / "EmoEvaluation" / "Categorical" / f"{dialog}_e2_cat.txt").write_text(
            f"{turns[0][0]} :Neutral state; ()\n", encoding="utf-8"
        )
        (folder / "transcriptions").mkdir()
        (folder / "transcriptions" / f"{dialog}.txt").write_text("".join(transcript), encoding="utf-8")
    return built


# ---------------------------------------------------------------------------------------------
# MELD: MELD.Raw/{train,dev,test}_sent_emo.csv + train_splits/ dev_splits_complete/ output_repeated_...
# ---------------------------------------------------------------------------------------------

MELD_COLUMNS = (
    "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime"
)


def make_meld(base: Path) -> BuiltCorpus:
    root = base / "MELD.Raw"
    built = BuiltCorpus(root=base)
    folders = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
    rows = {  # split: [(dia, utt, utterance text, speaker, emotion, clip: ok | missing | corrupt)]
        "train": [
            ("0", "0", "Oh my God, he\u0092s lost it.", "Phoebe", "sadness", "ok"),
            ("0", "1", "What?", "Monica", "surprise", "ok"),
            ("1", "0", "You\u0092re kidding\u0085 right?", "Ross", "joy", "missing"),
            ("1", "1", "Okay.", "Ross", "contempt", "ok"),
            ("x1", "2", "Broken id.", "Ross", "neutral", "ok"),
        ],
        "dev": [("125", "3", "Hi.", "Joey", "neutral", "corrupt"), ("2", "0", "Hey!", "Joey", "anger", "ok")],
        "test": [("0", "0", "Pivot!", "Ross", "fear", "ok")],
    }
    emotion = {"sadness": "sad", "surprise": "surprise", "anger": "angry", "fear": "fear"}
    prompts = iter(
        ["hello-world", "auth-thankyou", "activated", "calling", "vm-goodbye", "cancelled", "agent-pass"]
    )
    for split, records in rows.items():
        lines = [MELD_COLUMNS]
        for n, (dia, utt, text, speaker, emo, clip) in enumerate(records, start=1):
            quoted = '"' + text.replace('"', '""') + '"'
            lines.append(
                f'{n},{quoted},{speaker},{emo},neutral,{dia},{utt},3,6,"00:20:57,256","00:21:00,049"'
            )
            uid = f"{split}_dia{dia}_utt{utt}" if dia.isdigit() else f"{split}_line{n + 1}"
            path = root / folders[split] / f"dia{dia}_utt{utt}.mp4"
            if not dia.isdigit():
                built.rejects[uid] = "malformed_line"
                continue
            if clip == "missing":
                built.rejects[uid] = "missing_audio"
                continue
            if clip == "corrupt":
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a whole mp4")
                built.rejects[uid] = "unreadable_audio"
                continue
            duration = write_video(path, next(prompts))
            if emo == "contempt":
                built.rejects[uid] = "unknown_label"
                continue
            fixed = text.replace("\u0092", "\u2019").replace("\u0085", "\u2026")
            built.cuts[uid] = Want(fixed, duration, split, custom={"emotion": emotion[emo]})
        (root / f"{split}_sent_emo.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_video(root / folders["test"] / "final_videos_testdia0_utt0.mp4", "hello-world")  # listed nowhere
    return built


# ---------------------------------------------------------------------------------------------
# ESD: <spk>/<Emotion>/<split>/<spk>_<n>.wav, <spk>/<spk>.txt (per-speaker encodings), ReadMe.txt
# ---------------------------------------------------------------------------------------------

ESD_README = """The ESD database consists of 10 native English speakers and 10 native Chinese speakers.

0001: Chinese Female
0004: Chinese Male
0011: English Male
"""


def make_esd(base: Path) -> BuiltCorpus:
    root = base / "Emotion Speech Dataset"
    built = BuiltCorpus(root=base)
    (root).mkdir(parents=True)
    (root / "ReadMe.txt").write_text(ESD_README, encoding="utf-8")
    speakers = {  # spk: (encoding, [(utt, folder, split, line fields or None, prompt)])
        "0001": (
            "gb2312",
            [
                ("000001", "Neutral", "train", ["打远一看，它们的确很是美丽，", "中立"], "hello-world"),
                ("000351", "Angry", "evaluation", ["我们都很生气。", "生气"], "auth-thankyou"),
                ("000352", "Sad", "test", ["这是开心的话。", "开心"], "activated"),
                ("000353", "Happy", "train", ["缺少情绪"], "calling"),
                ("000354", "Happy", "train", None, "cancelled"),
            ],
        ),
        "0011": (
            "utf-16",
            [
                ("000001", "Neutral", "train", ["The nine the eggs, I keep.", "Neutral"], "vm-goodbye"),
                ("001401", "Surprise", "test", ["I am so surprised!", "Surprise"], "agent-pass"),
            ],
        ),
    }
    gender = {"0001": "female", "0011": "male"}
    for spk, (encoding, utts) in speakers.items():
        lines = []
        for utt, folder, split, fields, prompt in utts:
            uid = f"{spk}_{utt}"
            duration = write_speech(root / spk / folder / split / f"{uid}.wav", prompt)
            if fields is not None:
                lines.append("\t".join([uid, *fields]))
            if fields is None:
                built.rejects[uid] = "no_transcript"
            elif len(fields) != 2:
                built.rejects[uid] = "malformed_line"
            elif folder == "Sad":
                built.rejects[uid] = "label_conflict"
            else:
                language = "zh" if spk == "0001" else "en"
                want = Want(fields[0], duration, split, gender[spk], custom={"emotion": folder.lower()})
                want.custom["language"] = language
                built.cuts[uid] = want
        data = "\n".join(lines) + "\n"
        (root / spk / f"{spk}.txt").write_bytes(
            codecs.BOM_UTF16_LE + data.encode("utf-16-le") if encoding == "utf-16" else data.encode(encoding)
        )
    return built


# ---------------------------------------------------------------------------------------------
# CREMA-D: AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav + VideoDemographics.csv
# ---------------------------------------------------------------------------------------------

CREMAD_DEMOGRAPHICS = """ActorID,Age,Sex,Race,Ethnicity
1001,51,Male,Caucasian,Not Hispanic
1002,21,Female,Caucasian,Not Hispanic
1003,42,Female,Caucasian,Not Hispanic
1004,22,Female,Caucasian,Not Hispanic
1005,24,Male,Caucasian,Not Hispanic
1006,74,Female,Caucasian,Not Hispanic
1076,25,Female,African American,Not Hispanic
"""


def make_cremad(base: Path) -> BuiltCorpus:
    built = BuiltCorpus(root=base)
    audio = base / "AudioWAV"
    audio.mkdir(parents=True)
    (base / "VideoDemographics.csv").write_text(CREMAD_DEMOGRAPHICS, encoding="utf-8")
    files = {  # name: (prompt, expected: (text, gender, age bucket, emotion, intensity) or reject code)
        "1001_DFA_ANG_XX": (
            "hello-world",
            ("Don't forget a jacket", "male", "adult", "angry", "unspecified"),
        ),
        "1002_TIE_SAD_LO": (
            "auth-thankyou",
            ("That is exactly what happened", "female", "adult", "sad", "low"),
        ),
        "1006_IWW_NEU_HI": ("activated", ("I wonder what this is about", "female", "old", "neutral", "high")),
        "1099_IEO_HAP_MD": ("calling", ("It's eleven o'clock", None, None, "happy", "medium")),
        "1003_XYZ_NEU_XX": ("cancelled", "unknown_label"),
        "1004_DFA_ANG": ("vm-goodbye", "malformed_line"),
        "1005_DFA_BOR_XX": ("agent-pass", "unknown_label"),
        "1076_MTI_SAD_XX": (None, "empty_audio"),
    }
    years = {"1001": 51, "1002": 21, "1006": 74}
    for name, (prompt, want) in files.items():
        path = audio / f"{name}.wav"
        if prompt is None:
            sf.write(str(path), np.zeros(0, dtype=np.float32), 16000)  # header only, as in some copies
        else:
            duration = write_speech(path, prompt)
        if isinstance(want, str):
            built.rejects[name] = want
            continue
        text, gender, age, emotion, intensity = want
        custom = {"emotion": emotion, "intensity": intensity}
        if name[:4] in years:
            custom["age_years"] = years[name[:4]]
        built.cuts[name] = Want(text, duration, None, gender, age, custom)
    return built


# ---------------------------------------------------------------------------------------------
# RAVDESS: Actor_NN/<modality>-<channel>-<emotion>-<intensity>-<statement>-<repetition>-<actor>.wav
# ---------------------------------------------------------------------------------------------


def make_ravdess(base: Path) -> BuiltCorpus:
    built = BuiltCorpus(root=base)
    kids, dogs = "Kids are talking by the door", "Dogs are sitting by the door"
    files = {  # relative path: (prompt, want (text, gender, emotion, vocal channel, intensity) or code)
        "Actor_01/03-01-01-01-01-01-01.wav": ("hello-world", (kids, "male", "neutral", "speech", "normal")),
        "Actor_02/03-01-02-01-02-01-02.wav": (
            "auth-thankyou",
            (dogs, "female", "neutral", "speech", "normal"),
        ),
        "Actor_02/03-02-05-02-01-02-02.wav": ("activated", (kids, "female", "angry", "song", "strong")),
        "Actor_01/03-01-09-01-01-01-01.wav": ("calling", "unknown_label"),
        "Actor_03/02-01-06-01-01-01-03.mp4": ("video-only", "no_audio_track"),
        "Actor_03/01-01-03-01-02-01-03.mp4": ("vm-goodbye", (dogs, "male", "happy", "speech", "normal")),
        "Actor_04/03-01-04-01-bad.wav": ("cancelled", "malformed_line"),
    }
    for rel, (prompt, want) in files.items():
        path = base / rel
        uid = path.stem
        if path.suffix == ".mp4":
            duration = write_video(path, prompt, audio=prompt != "video-only")  # video-only: no audio track
        else:
            duration = write_speech(path, prompt)
        if isinstance(want, str):
            built.rejects[uid] = want
            continue
        text, gender, emotion, channel, intensity = want
        custom = {"emotion": emotion, "vocal_channel": channel, "intensity": intensity}
        built.cuts[uid] = Want(text, duration, None, gender, custom=custom)
    return built


# ---------------------------------------------------------------------------------------------
# ESC-50: ESC-50-master/meta/esc50.csv + audio/<fold>-<src>-<take>-<target>.wav
# ---------------------------------------------------------------------------------------------


def make_esc50(base: Path) -> BuiltCorpus:
    root = base / "ESC-50-master"
    built = BuiltCorpus(root=base)
    rows = [  # filename, fold, target, category, expected events or reject code, write audio
        ("1-100032-A-0.wav", 1, 0, "dog", "no_label", True),
        ("1-187207-A-20.wav", 1, 20, "crying_baby", ["cry"], True),
        ("2-102414-A-21.wav", 2, 21, "sneezing", ["sneeze"], True),
        ("3-110536-A-24.wav", 3, 24, "coughing", ["cough"], True),
        ("4-119647-A-26.wav", 4, 26, "laughing", ["laugh"], True),
        ("5-200334-A-23.wav", 5, 23, "breathing", ["other"], True),
        ("5-200334-B-99.wav", 5, 99, "unicorn", "unknown_label", True),
        ("2-109505-A-21.wav", 2, 21, "sneezing", "missing_audio", False),
    ]
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    for i, (filename, fold, target, category, want, write) in enumerate(rows):
        lines.append(f"{filename},{fold},{target},{category},False,{filename.split('-')[1]},A")
        uid = Path(filename).stem
        duration = write_noise(root / "audio" / filename, 0.5, 44100, seed=i) if write else 0.0
        if isinstance(want, str):
            built.rejects[uid] = want
        else:
            built.cuts[uid] = Want("", duration, None, custom={"events": want, "fold": fold})
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return built


# ---------------------------------------------------------------------------------------------
# VocalSound: data/audio_16k/<f|m><spk>_<session>_<label>.wav + datafiles/*.json + meta/all_meta.json
# ---------------------------------------------------------------------------------------------


def make_vocalsound(base: Path) -> BuiltCorpus:
    root = base / "data"
    built = BuiltCorpus(root=base)
    files = {  # name: (split, want (events, gender, age bucket) or reject code)
        "f0003_0_cough": ("train", (["cough"], "female", "adult")),
        "f0003_0_laughter": ("train", (["laugh"], "female", "adult")),
        "m0004_0_throatclearing": ("test", (["throat_clearing"], "male", "old")),
        "m0004_0_sniff": ("test", (["other"], "male", "old")),
        "f0005_1_sigh": ("unassigned", (["sigh"], "female", None)),
        "f0005_1_yodel": ("unassigned", "unknown_label"),
    }
    lists: dict[str, list] = {"tr.json": [], "val.json": [], "te.json": []}
    for i, (name, (split, want)) in enumerate(files.items()):
        duration = write_noise(root / "audio_16k" / f"{name}.wav", 0.4, 16000, seed=i)
        target = {"train": "tr.json", "test": "te.json"}.get(split)
        if target:
            lists[target].append({"wav": f"/data/sls/vocalsound/audio_16k/{name}.wav", "labels": "/m/01b_21"})
        if isinstance(want, str):
            built.rejects[name] = want
        else:
            events, gender, age = want
            built.cuts[name] = Want("", duration, split, gender, age, {"events": events})
    (root / "datafiles").mkdir(parents=True)
    for name, data in lists.items():
        (root / "datafiles" / name).write_text(json.dumps({"data": data}), encoding="utf-8")
    (root / "meta").mkdir()
    meta = {
        "f0003": ["Female", "25", "United States", "English", "no"],
        "m0004": ["Male", "67", "India", "Hindi", "no"],
    }
    (root / "meta" / "all_meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return built


# ---------------------------------------------------------------------------------------------
# Nonspeech7k: train/ test/ + "metadata of train set.csv", "metadata of test set.csv"
# ---------------------------------------------------------------------------------------------


def make_nonspeech7k(base: Path) -> BuiltCorpus:
    built = BuiltCorpus(root=base)
    splits = {
        "train": [
            ("breath_1", "breath", ["other"]),
            ("cough_7", "cough", ["cough"]),
            ("yawn_2", "yawn", ["other"]),
            ("snort_1", "snort", "unknown_label"),
            ("laugh_9", "laugh", "missing_audio"),
        ],
        "test": [("scream_3", "screaming", ["scream"]), ("cry_4", "crying", ["cry"])],
    }
    for split, rows in splits.items():
        lines = ["Filename,Classname,Class ID"]
        for i, (name, label, want) in enumerate(rows):
            lines.append(f"{name}.wav,{label},{i}")
            uid = f"{split}_{name}"
            if want == "missing_audio":
                built.rejects[uid] = want
                continue
            duration = write_noise(base / split / f"{name}.wav", 0.4, 32000, seed=i)
            if isinstance(want, str):
                built.rejects[uid] = want
            else:
                built.cuts[uid] = Want("", duration, split, custom={"events": want})
        (base / f"metadata of {split} set.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return built


# ---------------------------------------------------------------------------------------------
# AudioSet-style tables: FSD50K ground truth and AudioSet segment lists (+ class_labels_indices.csv)
# ---------------------------------------------------------------------------------------------

AUDIOSET_ONTOLOGY = """index,mid,display_name
0,/m/09x0r,"Speech"
16,/m/01j3sz,"Laughter"
20,/m/07pzfmf,"Chuckle, chortle"
37,/m/07plz5l,"Sigh"
47,/m/01b_21,"Cough"
74,/m/0bt9lr,"Dog"
"""


def make_audioset(base: Path) -> BuiltCorpus:
    built = BuiltCorpus(root=base)
    fsd = base / "FSD50K"
    gt = ["fname,labels,mids,split"]
    fsd_rows = [  # fname, labels, split, expected events or code, write audio
        ("64760", "Laughter,Chuckle_and_chortle,Human_voice", "train", ["laugh"], True),
        ("17", "Cough,Human_voice", "val", ["cough"], True),
        ("5", "Electric_guitar,Guitar,Music", "train", "no_label", True),
        ("8", "Sigh", "train", "missing_audio", False),
    ]
    for i, (fname, labels, split, want, write) in enumerate(fsd_rows):
        gt.append(f'{fname},"{labels}","/m/x",{split}')
        uid = f"dev_{fname}"
        duration = write_noise(fsd / "FSD50K.dev_audio" / f"{fname}.wav", 0.4, 44100, seed=i) if write else 0
        if isinstance(want, str):
            built.rejects[uid] = want
        else:
            built.cuts[uid] = Want("", duration, split, custom={"events": want})
    (fsd / "FSD50K.ground_truth").mkdir(parents=True)
    (fsd / "FSD50K.ground_truth" / "dev.csv").write_text("\n".join(gt) + "\n", encoding="utf-8")
    (fsd / "FSD50K.ground_truth" / "vocabulary.csv").write_text("0,Laughter,/m/01j3sz\n", encoding="utf-8")

    audioset = base / "audioset"
    audioset.mkdir()
    (audioset / "class_labels_indices.csv").write_text(AUDIOSET_ONTOLOGY, encoding="utf-8")
    segments = [
        "# Segments csv created Sun Mar  5 10:54:31 2017",
        "# num_ytids=4, num_segs=4, num_unique_labels=5, num_positive_labels=7",
        "# YTID, start_seconds, end_seconds, positive_labels",
    ]
    seg_rows = [  # ytid, start, end, mids, audio file name or None, expected events or code
        (
            "-0SdAVK79lg",
            "30.000",
            "40.000",
            "/m/01b_21,/m/09x0r",
            "Y-0SdAVK79lg_30.000_40.000.wav",
            ["cough"],
        ),
        ("-1nilez17Dg", "30.000", "40.000", "/m/07plz5l", "-1nilez17Dg.wav", ["sigh"]),
        ("--4gqARaEJE", "0.000", "10.000", "/m/0bt9lr", "--4gqARaEJE_0.wav", "no_label"),
        ("-2xyzUnknown", "0.000", "10.000", "/m/01j3sz,/m/zzzzz", "-2xyzUnknown.wav", "unknown_label"),
    ]
    for i, (ytid, start, end, mids, name, want) in enumerate(seg_rows):
        segments.append(f'{ytid}, {start}, {end}, "{mids}"')
        duration = write_noise(audioset / "audio" / name, 0.4, 16000, seed=10 + i)
        uid = f"{ytid}_{start}"
        if isinstance(want, str):
            built.rejects[uid] = want
        else:
            built.cuts[uid] = Want("", duration, "eval_segments", custom={"events": want})
    (audioset / "eval_segments.csv").write_text("\n".join(segments) + "\n", encoding="utf-8")
    return built


# ---------------------------------------------------------------------------------------------
# VoxCeleb: vox1/vox1_meta.csv (tabs) + wav/<id>/<video>/<n>.wav; vox2/vox2_meta.csv + dev/aac/*.m4a
# ---------------------------------------------------------------------------------------------

VOX1_META = (
    "VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"
    "id10001\tA.J._Buckley\tm\tIreland\tdev\n"
    "id10270\tJoséphine_Exemple\tf\tFrance\ttest\n"
)
VOX2_META = "VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set \nid00012 ,n000012 ,m ,dev \nid00017 ,n000017 ,f ,test \n"


def make_voxceleb(base: Path) -> BuiltCorpus:
    built = BuiltCorpus(root=base)
    vox1, vox2 = base / "vox1", base / "vox2"
    vox1.mkdir(parents=True)
    vox2.mkdir(parents=True)
    (vox1 / "vox1_meta.csv").write_text(VOX1_META, encoding="utf-8")
    (vox2 / "vox2_meta.csv").write_text(VOX2_META, encoding="utf-8")
    files = [  # path, prompt, part, gender
        (vox1 / "wav/id10001/1zcIwhmdeo4/00001.wav", "hello-world", "vox1_dev", "male"),
        (vox1 / "wav/id10001/1zcIwhmdeo4/00002.wav", "auth-thankyou", "vox1_dev", "male"),
        (vox1 / "wav/id10270/x6uYqmx31kE/00001.wav", "activated", "vox1_test", "female"),
        (vox1 / "wav/id10999/aaaaaaaaaaa/00001.wav", "calling", "vox1_unlisted", None),
        (vox2 / "dev/aac/id00012/21Uxsk56VDQ/00001.m4a", "vm-goodbye", "vox2_dev", "male"),
        (vox2 / "test/aac/id00017/01dfn2spqyE/00001.m4a", "agent-pass", "vox2_test", "female"),
    ]
    for path, prompt, part, gender in files:
        if path.suffix == ".m4a":
            duration = write_video(path, prompt, ext_audio_only=True)
        else:
            duration = write_speech(path, prompt)
        uid = f"{path.parent.parent.name}-{path.parent.name}-{path.stem}"
        built.cuts[uid] = Want("", duration, part.split("_", 1)[1], gender)  # subset: dev | test | unlisted
    return built


# ---------------------------------------------------------------------------------------------
# KeSpeech: Tasks/ASR/<part>/{wav.scp,text,utt2subdialect,utt2spk}, Audio/, Metadata/spk2{gender,age}
# ---------------------------------------------------------------------------------------------


def make_kespeech(base: Path) -> BuiltCorpus:
    built = BuiltCorpus(root=base)
    (base / "Metadata").mkdir(parents=True)
    (base / "Metadata" / "spk2gender").write_text(
        "1000001 Male\n1000002 Female\n1000003 Female\n", encoding="utf-8"
    )
    (base / "Metadata" / "spk2age").write_text("1000001 25\n1000002 71\n1000003 9\n", encoding="utf-8")
    parts = {  # part: [(utt, speaker, subdialect, text, prompt or None)]
        "train_phase1": [
            ("1000001_0a1b", "1000001", "Mandarin", "今天天气不错", "hello-world"),
            ("1000002_0c2d", "1000002", "Beijing", "<SPOKEN_NOISE>我们走吧", "auth-thankyou"),
            ("1000002_0e3f", "1000002", "Beijing", "这条没有音频", None),
            ("1000003_0g4h", "1000003", "Southwestern", "", "activated"),
        ],
        "dev_phase1": [("1000003_1a1a", "1000003", "Southwestern", "小朋友你好", "calling")],
    }
    want = {"1000001": ("male", "adult"), "1000002": ("female", "old"), "1000003": ("female", "child")}
    for part, utts in parts.items():
        folder = base / "Tasks" / "ASR" / part
        folder.mkdir(parents=True)
        lists: dict[str, list[str]] = {"wav.scp": [], "text": [], "utt2subdialect": [], "utt2spk": []}
        for uid, spk, dialect, text, prompt in utts:
            rel = f"Audio/{spk}/phase1/{uid}.wav"
            lists["wav.scp"].append(f"{uid} {rel}")
            lists["text"].append(f"{uid} {text}".rstrip())
            lists["utt2subdialect"].append(f"{uid} {dialect}")
            lists["utt2spk"].append(f"{uid} {spk}")
            if prompt is None:
                built.rejects[uid] = "missing_audio"
                continue
            duration = write_speech(base / rel, prompt)
            if not text:
                built.rejects[uid] = "empty_text"
                continue
            gender, age = want[spk]
            built.cuts[uid] = Want(
                text.replace("<SPOKEN_NOISE>", ""), duration, part, gender, age, {"subdialect": dialect}
            )
        for name, lines in lists.items():
            (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return built


# ---------------------------------------------------------------------------------------------
# MUSAN and RIRS_NOISES
# ---------------------------------------------------------------------------------------------


def make_musan(base: Path) -> BuiltCorpus:
    root = base / "musan"
    built = BuiltCorpus(root=base)
    files = {
        "noise/free-sound/noise-free-sound-0000.wav": ("noise", {}),
        "noise/sound-bible/noise-sound-bible-0001.wav": ("noise", {}),
        "music/fma/music-fma-0000.wav": ("music", {"genres": ["pop", "rock"], "vocals": False}),
        "speech/librivox/speech-librivox-0000.wav": ("speech", {"annotation": ["male", "english"]}),
    }
    for i, (rel, (kind, custom)) in enumerate(files.items()):
        duration = write_noise(root / rel, 0.3, 16000, seed=i)
        built.cuts[Path(rel).stem] = Want("", duration, kind, custom={"kind": kind, **custom})
    (root / "music/fma/ANNOTATIONS").write_text("music-fma-0000 pop,rock N Some_Artist\n", encoding="utf-8")
    (root / "speech/librivox/ANNOTATIONS").write_text("speech-librivox-0000 male english\n", encoding="utf-8")
    (root / "README").write_text("MUSAN\n", encoding="utf-8")
    return built


def make_rirs_noises(base: Path) -> BuiltCorpus:
    root = base / "RIRS_NOISES"
    built = BuiltCorpus(root=base)
    point = root / "pointsource_noises"
    real = root / "real_rirs_isotropic_noises"
    sim = root / "simulated_rirs"
    files = [  # path, channels, expected kind + custom, or a reject code
        (
            point / "noise-free-sound-0001.wav",
            1,
            ("noise", {"noise_type": "point-source", "bg_fg_type": "foreground"}),
        ),
        (real / "RVB2014_type1_rir_largeroom1_far_angla.wav", 2, ("rir", {"room_id": "RVB2014_largeroom1"})),
        (real / "RVB2014_type1_noise_largeroom1_1.wav", 2, ("noise", {"noise_type": "isotropic"})),
        (
            real / "air_type1_air_binaural_aula_carolina_1_1_1_90_3.wav",
            1,
            ("rir", {"room_id": "air_aula_carolina"}),
        ),
        (real / "readme_tone.wav", 1, "dropped_by_lhotse"),
        (sim / "smallroom/Room001/Room001-00001.wav", 1, ("rir", {"room_id": "smallroom-Room001"})),
        (sim / "mediumroom/Room001/Room001-00001.wav", 1, ("rir", {"room_id": "mediumroom-Room001"})),
    ]
    for i, (path, channels, want) in enumerate(files):
        duration = write_noise(path, 0.25, 16000, channels=channels, seed=i)
        uid = path.stem
        if "simulated_rirs" in path.parts:
            uid = f"{path.parent.parent.name.removesuffix('room')}-{path.stem}"
        if isinstance(want, str):
            built.rejects[uid] = want
        else:
            kind, custom = want
            built.cuts[uid] = Want(
                "", duration, None, custom={"kind": kind, "num_channels": channels, **custom}
            )
    (point / "noise_list").write_text(
        "--noise-id noise-free-sound-0001 --noise-type point-source --bg-fg-type foreground "
        "pointsource_noises/noise-free-sound-0001.wav\n",
        encoding="utf-8",
    )
    (real / "rir_list").write_text(
        "--rir-id RVB2014_type1_rir_largeroom1_far_angla --room-id RVB2014_largeroom1 "
        "real_rirs_isotropic_noises/RVB2014_type1_rir_largeroom1_far_angla.wav\n"
        "--rir-id air_type1_air_binaural_aula_carolina_1_1_1_90_3 --room-id air_aula_carolina "
        "real_rirs_isotropic_noises/air_type1_air_binaural_aula_carolina_1_1_1_90_3.wav\n",
        encoding="utf-8",
    )
    (real / "noise_list").write_text(
        "--noise-id RVB2014_type1_noise_largeroom1_1 --noise-type isotropic --bg-fg-type background "
        "--room-linkage RVB2014_largeroom1 real_rirs_isotropic_noises/RVB2014_type1_noise_largeroom1_1.wav\n",
        encoding="utf-8",
    )
    for room in ("smallroom", "mediumroom"):
        (sim / room / "rir_list").write_text(
            f"--rir-id {room}-Room001-00001 --room-id {room}-Room001 "
            f"simulated_rirs/{room}/Room001/Room001-00001.wav\n",
            encoding="utf-8",
        )
    return built
