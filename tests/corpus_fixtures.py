"""Small corpora in their real on-disk layouts, built at test time from real recorded speech.

The speech is Debian's asterisk-core-sounds-en-wav (one female speaker, 8 kHz mono) with the
transcripts from asterisk-core-sounds-en; files are resampled to each corpus's rate and written in
its format (FLAC, WAV, MP3). Each builder returns a `BuiltCorpus` saying what an importer should
produce: the cuts (id -> `Want`) and the rejects (id -> reason code). Other tests may reuse these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from osum_data.demo import SOUNDS_DIR, asterisk_transcripts


def prompt_texts() -> dict[str, str]:
    """Prompt name -> transcript (the demo corpus's own reader)."""
    return asterisk_transcripts()


def prompt_text(name: str) -> str:
    return prompt_texts()[name]


def librispeech_text(name: str) -> str:
    """LibriSpeech style: upper case, no punctuation except apostrophes."""
    kept = "".join(c if c.isalnum() or c in " '" else " " for c in prompt_text(name))
    return " ".join(kept.upper().split())


def source_duration(name: str) -> float:
    return sf.info(str(SOUNDS_DIR / f"{name}.wav")).duration


@cache
def speech(name: str, sample_rate: int = 16000) -> np.ndarray:
    """The prompt's samples (float32, mono) resampled from 8 kHz to `sample_rate`."""
    samples, rate = sf.read(str(SOUNDS_DIR / f"{name}.wav"), dtype="float32")
    ratio = Fraction(sample_rate, rate)
    out = resample_poly(samples, ratio.numerator, ratio.denominator)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def write_speech(
    path: Path, names: str | list[str], sample_rate: int = 16000, fmt: str | None = None
) -> float:
    """Write one prompt (or several, concatenated) to `path`; returns the duration in seconds."""
    names = [names] if isinstance(names, str) else names
    samples = np.concatenate([speech(n, sample_rate) for n in names])
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, sample_rate, format=fmt)
    return len(samples) / sample_rate


@dataclass
class Want:
    """What an importer should make of one utterance."""

    text: str
    duration: float
    subset: str | None = None
    gender: str | None = None
    age: str | None = None
    custom: dict = field(default_factory=dict)


@dataclass
class BuiltCorpus:
    root: Path
    cuts: dict[str, Want] = field(default_factory=dict)
    rejects: dict[str, str] = field(default_factory=dict)  # id -> reason code

    @property
    def rows(self) -> int:
        return len(self.cuts) + len(self.rejects)


# ---------------------------------------------------------------------------------------------
# LibriSpeech: LibriSpeech/<part>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac + .trans.txt files
# ---------------------------------------------------------------------------------------------

SPEAKERS_TXT = """\
; The files in this directory are from the LibriSpeech corpus.
;ID  |SEX| SUBSET           |MINUTES| NAME
60   | M | train-clean-100  | 20.18 | |CBW|Simon
1089 | M | test-clean       |  8.10 | Joseph
1272 | M | dev-clean        |  8.07 | John Rose
1462 | F | dev-clean        |  8.03 | E. Tavano
2035 | X | dev-clean        |  8.00 | Somebody Unknown
"""


def make_librispeech(base: Path) -> BuiltCorpus:
    """dev-clean + test-clean with: an unknown gender code (2035), a speaker missing from
    SPEAKERS.TXT (777), a transcript line without its flac, and a flac without a transcript line."""
    root = base / "LibriSpeech"
    root.mkdir(parents=True)
    (root / "SPEAKERS.TXT").write_text(SPEAKERS_TXT, encoding="utf-8")
    built = BuiltCorpus(root=root)
    layout = {  # (part, speaker, chapter): [(utt, prompt or None for a missing flac)]
        ("dev-clean", "1272", "128104"): [("0000", "hello-world"), ("0001", "auth-thankyou")],
        ("dev-clean", "1462", "170138"): [("0000", "all-circuits-busy-now")],
        ("dev-clean", "2035", "147960"): [("0000", "activated")],
        ("dev-clean", "777", "126732"): [("0000", "vm-goodbye")],
        ("test-clean", "1089", "134686"): [("0000", "agent-pass"), ("0001", None)],
    }
    gender = {"1272": "male", "1462": "female", "1089": "male", "777": None}
    for (part, spk, chapter), utts in layout.items():
        folder = root / part / spk / chapter
        folder.mkdir(parents=True)
        lines = []
        for utt, prompt in utts:
            uid = f"{spk}-{chapter}-{utt}"
            text = librispeech_text(prompt) if prompt else "THIS FILE IS MISSING"
            lines.append(f"{uid} {text}")
            if prompt is None:
                built.rejects[uid] = "missing_audio"
                continue
            duration = write_speech(folder / f"{uid}.flac", prompt)
            if spk == "2035":
                built.rejects[uid] = "unknown_label"
            else:
                built.cuts[uid] = Want(text, duration, part, gender[spk])
        (folder / f"{spk}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    orphan = "1089-134686-0002"
    write_speech(root / "test-clean" / "1089" / "134686" / f"{orphan}.flac", "calling")
    built.rejects[orphan] = "no_transcript"
    return built


# ---------------------------------------------------------------------------------------------
# AISHELL-1: data_aishell/wav/<part>/<spk>/<utt>.wav, data_aishell/transcript/..., resource_aishell
# ---------------------------------------------------------------------------------------------

AISHELL_TEXT = {
    "BAC009S0002W0122": ("而 对 楼市 成交 抑制 作用 最 大 的 限 购", "而对楼市成交抑制作用最大的限购"),
    "BAC009S0002W0123": ("也 成为 地方 政府 的 眼中 钉", "也成为地方政府的眼中钉"),
    "BAC009S0724W0121": ("广州 市 房地产 中介 协会 分析", "广州市房地产中介协会分析"),
    "BAC009S0764W0121": ("甚至 出现 交易 几乎 停滞 的 情况", "甚至出现交易几乎停滞的情况"),
    "BAC009S0913W0133": ("ｋ 线 图 显示", "K线图显示"),  # lhotse maps full-width ｋ and upper-cases
    "BAC009S0915W0140": ("一 二 三", "一二三"),
    "BAC009S0916W0134": ("未知 性别", "未知性别"),
    "BAC009S0764W0199": ("这 条 没有 音频", None),  # transcript line whose wav is absent
}


def make_aishell(base: Path) -> BuiltCorpus:
    """train/dev/test with: a speaker with an unknown gender code (S0916), a speaker missing from
    speaker.info (S0915), a wav without a transcript line, a transcript line without a wav."""
    built = BuiltCorpus(root=base)
    (base / "resource_aishell").mkdir(parents=True)
    (base / "resource_aishell" / "speaker.info").write_text(
        "0002 F\n0724 M\n0764 M\n0913 F\n0916 U\n", encoding="utf-8"
    )
    files = {  # uid: (part, speaker folder, prompt)
        "BAC009S0002W0122": ("train", "S0002", "hello-world"),
        "BAC009S0002W0123": ("train", "S0002", "auth-thankyou"),
        "BAC009S0913W0133": ("train", "S0913", "calling"),
        "BAC009S0915W0140": ("train", "S0915", "cancelled"),
        "BAC009S0724W0121": ("dev", "S0724", "all-circuits-busy-now"),
        "BAC009S0764W0121": ("test", "S0764", "activated"),
        "BAC009S0764W0122": ("test", "S0764", "vm-goodbye"),  # no transcript line
        "BAC009S0916W0134": ("train", "S0916", "agent-pass"),  # speaker.info says "U"
    }
    genders = {"S0002": "female", "S0724": "male", "S0764": "male", "S0913": "female", "S0915": None}
    transcript = AISHELL_TEXT
    for uid, (part, spk, prompt) in files.items():
        duration = write_speech(base / "data_aishell" / "wav" / part / spk / f"{uid}.wav", prompt)
        if uid not in transcript:
            built.rejects[uid] = "no_transcript"
        elif spk == "S0916":
            built.rejects[uid] = "unknown_label"
        else:
            built.cuts[uid] = Want(transcript[uid][1], duration, part, genders[spk])
    built.rejects["BAC009S0764W0199"] = "missing_audio"
    lines = [f"{uid} {raw}" for uid, (raw, _) in transcript.items()]
    path = base / "data_aishell" / "transcript" / "aishell_transcript_v0.8.txt"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return built


# ---------------------------------------------------------------------------------------------
# CommonVoice: <release>/<locale>/clips/*.mp3 + <locale>/{train,dev,test,validated}.tsv
# ---------------------------------------------------------------------------------------------

CV_COLUMNS = (
    "client_id path sentence_id sentence sentence_domain up_votes down_votes age gender accents "
    "variant locale segment"
).split()


@dataclass
class CvRow:
    clip: int
    prompt: str
    age: str = ""
    gender: str = ""
    write_audio: bool = True


def make_commonvoice(base: Path) -> BuiltCorpus:
    """A CV-17-style release with locales en and sv-SE (not in lhotse's own locale list):
    mapped and empty gender/age, a non-binary answer, an unknown age string, a missing mp3."""
    root = base / "cv-corpus-17.0-2024-03-15"
    built = BuiltCorpus(root=root)
    splits = {
        ("en", "train"): [
            CvRow(100, "hello-world", "twenties", "male_masculine"),
            CvRow(101, "auth-thankyou", "sixties", "female_feminine"),
            CvRow(102, "activated"),
            CvRow(103, "calling", "thirties", "male", write_audio=False),
        ],
        ("en", "dev"): [
            CvRow(104, "all-circuits-busy-now", "fourties", "do_not_wish_to_say"),
            CvRow(105, "cancelled", "centuries", "female"),
        ],
        ("en", "test"): [CvRow(106, "vm-goodbye", "teens", "male")],
        ("sv-SE", "train"): [CvRow(200, "agent-pass", "fifties", "female_feminine")],
    }
    age_bucket = {"twenties": "adult", "sixties": "old", "fourties": "adult", "teens": "adult"}
    age_bucket["fifties"] = "adult"
    gender_id = {"male_masculine": "male", "female_feminine": "female", "male": "male", "female": "female"}
    for (locale, split), rows in splits.items():
        lines = ["\t".join(CV_COLUMNS)]
        for row in rows:
            uid = f"common_voice_{locale}_{row.clip}"
            sentence = prompt_text(row.prompt)
            duration = 0.0
            if row.write_audio:
                duration = write_speech(root / locale / "clips" / f"{uid}.mp3", row.prompt, 48000, "MP3")
            cells = {
                "client_id": f"client{row.clip}",
                "path": f"{uid}.mp3",
                "sentence_id": f"s{row.clip}",
                "sentence": sentence,
                "up_votes": "2",
                "down_votes": "0",
                "age": row.age,
                "gender": row.gender,
                "locale": locale,
            }
            lines.append("\t".join(cells.get(col, "") for col in CV_COLUMNS))
            if not row.write_audio:
                built.rejects[uid] = "missing_audio"
            elif row.age == "centuries":
                built.rejects[uid] = "unknown_label"
            else:
                custom = {"age_group_raw": row.age} if row.age else {}
                if row.gender == "do_not_wish_to_say":
                    custom["gender_raw"] = row.gender
                built.cuts[uid] = Want(
                    sentence, duration, split, gender_id.get(row.gender), age_bucket.get(row.age), custom
                )
        (root / locale / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # validated.tsv repeats the train/dev/test rows (it is their superset in real releases).
    validated = ["\t".join(CV_COLUMNS)]
    for split in ("train", "dev", "test"):
        validated += (root / "en" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]
    (root / "en" / "validated.tsv").write_text("\n".join(validated) + "\n", encoding="utf-8")
    (root / "en" / "invalidated.tsv").write_text("\t".join(CV_COLUMNS) + "\n", encoding="utf-8")
    return built


# ---------------------------------------------------------------------------------------------
# Generic TSV: metadata.tsv + audio/
# ---------------------------------------------------------------------------------------------


def make_tsv_audio(base: Path) -> dict[str, float]:
    """audio/*.wav at 16 kHz plus audio/long.wav (three prompts in a row) and a fake wav."""
    durations = {
        "hello.wav": write_speech(base / "audio" / "hello.wav", "hello-world"),
        "thanks.wav": write_speech(base / "audio" / "thanks.wav", "auth-thankyou"),
        "long.wav": write_speech(base / "audio" / "long.wav", ["agent-pass", "hello-world", "vm-goodbye"]),
    }
    (base / "audio" / "not_audio.wav").write_text("this is not a RIFF file\n", encoding="utf-8")
    return durations
