"""The aligner backends on real recorded speech (offline): PocketSphinx, faster-whisper (bundled
tiny.en) and CTC forced alignment (mechanics exact; a tiny random checkpoint saved here, since no
trained CTC model can be had offline)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lhotse import CutSet
from lhotse.serialization import deserialize_item as deserialize_cut

from osum_data.corpora import prepare
from osum_data.demo.joined import word_test_set
from osum_data.label.align.ctc import CTCAligner, ctc_token_spans, frame_seconds, group_chars, spell
from osum_data.label.align.sphinx import PocketSphinxAligner
from osum_data.label.align.whisper import WhisperAligner
from osum_data.label.align.words import reference_words, word_spans_from_tokens
from osum_data.run.stage import StageContext


@pytest.fixture(scope="module")
def joined(tmp_path_factory):
    """4 utterances of 5 single-word prompts with known pauses, imported by `prepare tsv`."""
    root = tmp_path_factory.mktemp("joined")
    word_test_set(root / "corpus", n_utterances=4, words=5, seed=3)
    prepare("tsv", root / "corpus", root / "import")
    cuts = [c.resample(16000) for c in CutSet.from_file(root / "import" / "cuts.jsonl.gz")]
    return cuts, json.loads((root / "corpus" / "reference.json").read_text())


def boundary_errors(cuts, reference) -> list[float]:
    errs = []
    for cut in cuts:
        for item, ref in zip(cut.supervisions[0].alignment["word"], reference[cut.id], strict=True):
            errs += [abs(item.start - ref["start"]), abs(item.end - ref["end"])]
    return errs


def ctx(tmp_path: Path) -> StageContext:
    return StageContext(0, 0, tmp_path, "align")


def test_pocketsphinx_boundaries_on_real_speech(joined, tmp_path):
    cuts, reference = joined
    res = PocketSphinxAligner()([c for c in cuts], ctx(tmp_path))
    assert not res.rejected and len(res.kept) == 4
    errs = boundary_errors(res.kept, reference)
    assert len(errs) == 40
    assert np.median(errs) <= 0.05 and np.percentile(errs, 90) <= 0.15
    assert res.kept[0].supervisions[0].custom["label_source"]["alignment"] == "model:pocketsphinx-en-us"
    assert res.counters["aligned_words"] == 20


def test_pocketsphinx_rejects_words_it_cannot_pronounce(joined, tmp_path):
    cut = joined[0][0].to_dict()
    cut["supervisions"][0]["text"] = "zorblax " + cut["supervisions"][0]["text"]
    res = PocketSphinxAligner(guess_pronunciations=False)([deserialize_cut(cut)], ctx(tmp_path))
    assert res.rejected[0][1].code == "oov_word" and "zorblax" in res.rejected[0][1].detail


def test_pocketsphinx_without_espeak_names_why_the_word_has_no_pronunciation(joined, tmp_path, monkeypatch):
    stage = PocketSphinxAligner()
    monkeypatch.setattr(stage.g2p, "binary", None)  # as on a machine without espeak-ng
    cut = joined[0][0].to_dict()
    cut["supervisions"][0]["text"] = "zorblax " + cut["supervisions"][0]["text"]
    res = stage([deserialize_cut(cut)], ctx(tmp_path))
    assert res.rejected[0][1].code == "oov_word"
    assert "zorblax (espeak-ng is not installed to guess it)" in res.rejected[0][1].detail


def test_guessed_pronunciations_align_real_speech_like_dictionary_ones(joined, tmp_path):
    """A dictionary without any of the test set's words: every word is pronounced by espeak-ng,
    and the boundaries on real speech stay within the same tolerance as with the real dictionary."""
    from osum_data.label.align.sphinx import shipped_model

    cuts, reference = joined
    spoken = {t for c in cuts for w in reference_words(c.supervisions[0].text) for t in w.spoken}
    lines = Path(shipped_model()[1]).read_text().splitlines()
    kept = [ln for ln in lines if ln.split()[0].split("(")[0] not in spoken]
    assert len(lines) - len(kept) >= len(spoken)  # every word and its alternates removed
    small = tmp_path / "without_test_words.dict"
    small.write_text("\n".join(kept) + "\n")
    res = PocketSphinxAligner(dictionary=str(small))(list(cuts), ctx(tmp_path))
    assert not res.rejected and len(res.kept) == 4
    errs = boundary_errors(res.kept, reference)
    assert np.median(errs) <= 0.05 and np.percentile(errs, 90) <= 0.2
    guessed = {w for c in res.kept for w in c.supervisions[0].custom["alignment_guessed_words"]}
    assert guessed == spoken and res.counters["guessed_pronunciation_cuts"] == 4


def test_whisper_keeps_agreeing_and_rejects_disagreeing_transcripts(joined, tmp_path):
    cuts, reference = joined
    wrong = cuts[1].to_dict()
    wrong["id"] = wrong["supervisions"][0]["id"] = "wrong"
    wrong["supervisions"][0]["text"] = "completely different words were said here today"
    chinese = cuts[2].to_dict()
    chinese["id"] = chinese["supervisions"][0]["id"] = "zh"
    chinese["supervisions"][0].update(text="你好世界", language="zh")
    stage = WhisperAligner(max_token_error_rate=0.2)
    res = stage([cuts[0], cuts[3], deserialize_cut(wrong), deserialize_cut(chinese)], ctx(tmp_path))
    codes = {c.id: r.code for c, r in res.rejected}
    assert codes["wrong"] == "disagrees" and codes["zh"] == "unsupported_language"
    assert res.kept, f"tiny.en agreed on none of the joined utterances: {codes}"
    for cut in res.kept:
        assert len(cut.supervisions[0].alignment["word"]) == len(reference_words(cut.supervisions[0].text))
    errs = boundary_errors(res.kept, reference)
    assert np.median(errs) <= 0.35  # Whisper's word times are coarse; the benchmark reports them


def test_ctc_mechanics_exact():
    vocab = {"<pad>": 0, "|": 1, "a": 2, "b": 3}
    words = reference_words("ab a", "en")
    ids, lengths = spell(words, vocab, upper=False, cut_id="c")
    assert ids == [2, 3, 2] and lengths == [2, 1]
    # emissions peaked on: blank, a, a, b, blank, blank, a, blank, blank, blank
    path = [0, 2, 2, 3, 0, 0, 2, 0, 0, 0]
    log_probs = np.full((10, 4), np.log(0.01 / 3), dtype=np.float32)
    log_probs[np.arange(10), path] = np.log(0.99)
    chars = ctc_token_spans(log_probs, ids, blank=0, frame_s=0.02)
    assert [(round(s.start, 6), round(s.end, 6)) for s in chars] == [(0.02, 0.06), (0.06, 0.08), (0.12, 0.14)]
    spans = word_spans_from_tokens(words, group_chars(chars, lengths))
    assert [(round(s.start, 6), round(s.end, 6)) for s in spans] == [(0.02, 0.08), (0.12, 0.14)]
    assert spans[0].score == pytest.approx(0.99, abs=1e-3)
    # upper-case vocabularies are spelled in upper case; characters the model lacks are rejected
    assert spell(reference_words("ba"), {"<pad>": 0, "A": 1, "B": 2}, True, "c")[0] == [2, 1]
    from osum_data.run.stage import Reject

    with pytest.raises(Reject, match="unmappable_char"):
        spell(reference_words("café"), vocab, False, "c")
    with pytest.raises(Reject, match="audio_too_short"):
        ctc_token_spans(log_probs[:2], ids, blank=0, frame_s=0.02)


@pytest.fixture(scope="module")
def tiny_ctc(tmp_path_factory) -> Path:
    """A randomly initialised wav2vec2 CTC model saved like a real checkpoint folder."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    d = tmp_path_factory.mktemp("ctc")
    vocab = {
        "<pad>": 0,
        "<unk>": 1,
        "|": 2,
        **{c: i + 3 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz'")},
    }
    (d / "vocab.json").write_text(json.dumps(vocab))
    Wav2Vec2CTCTokenizer(str(d / "vocab.json"), pad_token="<pad>", unk_token="<unk>").save_pretrained(d)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(d)
    config = Wav2Vec2Config(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    Wav2Vec2ForCTC(config).save_pretrained(d)
    return d


def test_ctc_aligner_loads_a_local_checkpoint_and_aligns_real_speech(joined, tiny_ctc, tmp_path):
    cuts, _ = joined
    stage = CTCAligner(model_dir=str(tiny_ctc))
    assert stage.frame_s == frame_seconds(stage.model.config) == 0.02 and stage.blank == 0 and not stage.upper
    res = stage(cuts[:2], ctx(tmp_path))
    assert not res.rejected
    for cut in res.kept:
        items = cut.supervisions[0].alignment["word"]
        assert len(items) == len(reference_words(cut.supervisions[0].text)) == 5
        for a in items:  # frame boundaries: multiples of 20 ms, inside the cut, in order
            assert round(a.start / 0.02, 6) % 1 == 0 and round(a.end / 0.02, 6) % 1 == 0
            assert 0 <= a.start < a.end <= cut.duration
        assert all(x.end <= y.start for x, y in zip(items, items[1:], strict=False))
    assert res.kept[0].supervisions[0].custom["label_source"]["alignment"] == f"model:ctc:{tiny_ctc.name}"


def test_ctc_aligner_without_checkpoint_says_what_is_missing(tmp_path):
    with pytest.raises(RuntimeError, match=r"holds no CTC checkpoint \(config.json\)"):
        CTCAligner(model_dir=str(tmp_path))


def test_pocketsphinx_retries_with_wide_beams_where_default_beams_prune_the_word(tmp_path):
    import librosa
    import soundfile as sf

    from osum_data.demo import SOUNDS_DIR

    x, sr = sf.read(SOUNDS_DIR / "digits/6.wav", dtype="float32")
    audio = librosa.resample(x, orig_sr=sr, target_sr=16000)  # with this resampling the default
    stage = PocketSphinxAligner()  # beams find no alignment of "six"
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes()
    assert stage._run(stage.decoder, ["six"], pcm) is None
    from osum_data.demo import prompt_cut

    spans = stage.align(audio, reference_words("six"), "en", prompt_cut("digits/6", "six"))
    assert stage._wide is not None and 0.3 < spans[0].start < spans[0].end < 0.7
