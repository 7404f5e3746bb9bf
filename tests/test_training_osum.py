"""OSUM fidelity: the `osum` adapter computes what OSUM's does, and OSUM's released checkpoint
layout converts and loads (encoder, adapter, speech boundary embeddings, LoRA).

OSUM's weights cannot be downloaded here, so the test writes a checkpoint in OSUM's key layout
(the keys of `LLMASR_Model.state_dict()` in ASLP-lab/OSUM: WeNet's Whisper encoder
`encoder.embed.conv.0`, `encoder.encoders.N.self_attn.linear_q`, ...; `down_sample_2.conv.1/4/7`;
`speech_transformer.embed.out.0/1`, `speech_transformer.encoders.N.feed_forward.w_1`, ...;
`speech_llama_proj`; `speech_token_emded` with speech_token_num + 2 rows; peft's
`llama_model.base_model.model.model.layers.N.self_attn.q_proj.lora_A.default.weight`) filled with
random values, converts it, and checks every tensor lands where OSUM's forward uses it by
recomputing OSUM's encoder and adapter forward op by op from the OSUM-named tensors.
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from tests.conftest import REPO, speech  # noqa: E402
from training.checkpoint import load_trainable  # noqa: E402
from training.config import load_config  # noqa: E402
from training.features import log_mel  # noqa: E402
from training.model import build_model  # noqa: E402
from training.osum_checkpoint import main as convert_main  # noqa: E402

TINY = REPO / "training" / "configs" / "tiny.yaml"
OSUM_TINY = [
    "model.adapter.type=osum",
    "model.adapter.layers=2",
    "model.adapter.heads=4",
    "model.adapter.ffn_dim=160",
]
SPEECH_TOKEN_NUM = 4097  # OSUM's released config
LORA_TARGETS = {"self_attn": ["q_proj", "k_proj", "v_proj", "o_proj"], "mlp": ["gate_proj", "down_proj"]}


def osum_state(cfg, model) -> dict[str, torch.Tensor]:
    """A state dict with OSUM's keys and shapes for the tiny sizes (random values)."""
    g = torch.Generator().manual_seed(7)

    def t(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    enc = model.encoder.config
    d, f, m = enc.d_model, enc.encoder_ffn_dim, enc.num_mel_bins
    sd = {
        "encoder.embed.conv.0.weight": t(d, m, 3), "encoder.embed.conv.0.bias": t(d),
        "encoder.embed.conv.2.weight": t(d, d, 3), "encoder.embed.conv.2.bias": t(d),
        "encoder.embed.pos_enc.pe": t(1, enc.max_source_positions, d),
        "encoder.after_norm.weight": 1 + t(d), "encoder.after_norm.bias": t(d),
    }  # fmt: skip
    for i in range(enc.encoder_layers):
        p = f"encoder.encoders.{i}."
        for name in ("linear_q", "linear_v", "linear_out"):
            sd[p + f"self_attn.{name}.weight"], sd[p + f"self_attn.{name}.bias"] = t(d, d), t(d)
        sd[p + "self_attn.linear_k.weight"] = t(d, d)  # Whisper's key has no bias
        sd[p + "feed_forward.w_1.weight"], sd[p + "feed_forward.w_1.bias"] = t(f, d), t(f)
        sd[p + "feed_forward.w_2.weight"], sd[p + "feed_forward.w_2.bias"] = t(d, f), t(d)
        for n in ("norm1", "norm2"):
            sd[p + f"{n}.weight"], sd[p + f"{n}.bias"] = 1 + t(d), t(d)
    a = cfg.model.adapter.resolved()
    h = model.causal_lm.config.hidden_size
    for j in (1, 4, 7):
        sd[f"down_sample_2.conv.{j}.weight"], sd[f"down_sample_2.conv.{j}.bias"] = t(d, d, 3), t(d)
    st = "speech_transformer."
    sd[st + "embed.out.0.weight"], sd[st + "embed.out.0.bias"] = t(d, d), t(d)
    sd[st + "embed.out.1.weight"], sd[st + "embed.out.1.bias"] = 1 + t(d), t(d)
    # WeNet's PositionalEncoding buffer (5000 positions, sin at even, cos at odd channels)
    pos = torch.arange(5000.0)[:, None] * torch.exp(torch.arange(0, d, 2) * -(math.log(10000.0) / d))
    sd[st + "embed.pos_enc.pe"] = torch.stack([pos.sin(), pos.cos()], -1).reshape(1, 5000, d)
    for i in range(a.layers):
        p = f"{st}encoders.{i}."
        for name in ("linear_q", "linear_k", "linear_v", "linear_out"):
            sd[p + f"self_attn.{name}.weight"], sd[p + f"self_attn.{name}.bias"] = t(d, d), t(d)
        sd[p + "feed_forward.w_1.weight"], sd[p + "feed_forward.w_1.bias"] = t(a.ffn_dim, d), t(a.ffn_dim)
        sd[p + "feed_forward.w_2.weight"], sd[p + "feed_forward.w_2.bias"] = t(d, a.ffn_dim), t(d)
        for n in ("norm1", "norm2"):
            sd[p + f"{n}.weight"], sd[p + f"{n}.bias"] = 1 + t(d), t(d)
    sd[st + "after_norm.weight"], sd[st + "after_norm.bias"] = 1 + t(d), t(d)
    sd["speech_llama_proj.weight"], sd["speech_llama_proj.bias"] = t(h, d), t(h)
    sd["speech_token_emded.weight"] = t(SPEECH_TOKEN_NUM + 2, h)
    sd["speaker_head.weight"], sd["speaker_head.bias"] = t(SPEECH_TOKEN_NUM, h), t(SPEECH_TOKEN_NUM)
    sd["ln_speech.weight"], sd["ln_speech.bias"] = 1 + t(d), t(d)
    # The peft-wrapped LLM: base weights (frozen Qwen2) and LoRA A/B of rank r.
    lm = "llama_model.base_model.model."
    r = cfg.model.lora.r
    for name, w in model.causal_lm.state_dict().items():
        if "lora_" not in name:  # base weights under peft's names (base_layer), as OSUM saved them
            sd[lm + name] = w.clone()
    for i in range(model.causal_lm.config.num_hidden_layers):
        for block, mods in LORA_TARGETS.items():
            for mod in mods:
                base = model.causal_lm.get_submodule(f"model.layers.{i}.{block}.{mod}").base_layer
                key = f"{lm}model.layers.{i}.{block}.{mod}"
                sd[f"{key}.lora_A.default.weight"] = t(r, base.in_features)
                sd[f"{key}.lora_B.default.weight"] = t(base.out_features, r)
    return sd


def wenet_attention(x, keep, sd, p, heads):
    """WeNet's MultiHeadedAttention as OSUM runs it: scores masked with -inf at padded keys."""
    b, t, d = x.shape
    q = F.linear(x, sd[p + "linear_q.weight"], sd.get(p + "linear_q.bias"))
    k = F.linear(x, sd[p + "linear_k.weight"], sd.get(p + "linear_k.bias"))
    v = F.linear(x, sd[p + "linear_v.weight"], sd.get(p + "linear_v.bias"))
    q, k, v = (y.view(b, t, heads, d // heads).transpose(1, 2) for y in (q, k, v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(d // heads)
    masked = ~keep[:, None, None, :]
    attn = torch.softmax(scores.masked_fill(masked, -float("inf")), -1).masked_fill(masked, 0.0)
    out = (attn @ v).transpose(1, 2).reshape(b, t, d)
    return F.linear(out, sd[p + "linear_out.weight"], sd[p + "linear_out.bias"])


def wenet_layer(x, keep, sd, p, heads, act):
    """WeNet's TransformerEncoderLayer, normalize_before=True (eval: no dropout)."""
    d = x.shape[-1]
    y = F.layer_norm(x, (d,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-5)
    x = x + wenet_attention(y, keep, sd, p + "self_attn.", heads)
    y = F.layer_norm(x, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-5)
    ff = F.linear(act(F.linear(y, sd[p + "feed_forward.w_1.weight"], sd[p + "feed_forward.w_1.bias"])),
                  sd[p + "feed_forward.w_2.weight"], sd[p + "feed_forward.w_2.bias"])  # fmt: skip
    return x + ff


def osum_speech_embeddings(sd, mel, layers_enc, heads_enc, layers_ad, heads_ad) -> torch.Tensor:
    """OSUM's get_embedding_from_wav + _add_bos_eos for one utterance (no padding), from its keys:
    WeNet Whisper encoder (conv1d2 + abs_pos_whisper + GELU layers) -> GxlConv1dSubsampling4 ->
    speech_transformer (linear input, abs_pos, ReLU layers) -> speech_llama_proj -> [bos, x, eos]."""
    x = F.gelu(F.conv1d(mel, sd["encoder.embed.conv.0.weight"], sd["encoder.embed.conv.0.bias"], padding=1))
    x = F.gelu(
        F.conv1d(x, sd["encoder.embed.conv.2.weight"], sd["encoder.embed.conv.2.bias"], stride=2, padding=1)
    )
    x = x.transpose(1, 2)
    x = x + sd["encoder.embed.pos_enc.pe"][:, : x.shape[1]]
    keep = torch.ones(1, x.shape[1], dtype=torch.bool)
    for i in range(layers_enc):
        x = wenet_layer(x, keep, sd, f"encoder.encoders.{i}.", heads_enc, F.gelu)
    d = x.shape[-1]
    x = F.layer_norm(x, (d,), sd["encoder.after_norm.weight"], sd["encoder.after_norm.bias"], 1e-5)
    x = x.transpose(1, 2)
    for j, stride in ((1, 1), (4, 2), (7, 2)):  # ConstantPad1d((2, 0)) + Conv1d(k=3) + GELU
        w, b = sd[f"down_sample_2.conv.{j}.weight"], sd[f"down_sample_2.conv.{j}.bias"]
        x = F.gelu(F.conv1d(F.pad(x, (2, 0)), w, b, stride=stride))
    x = x.transpose(1, 2)
    st = "speech_transformer."
    x = F.linear(x, sd[st + "embed.out.0.weight"], sd[st + "embed.out.0.bias"])
    x = F.layer_norm(x, (d,), sd[st + "embed.out.1.weight"], sd[st + "embed.out.1.bias"], 1e-5)
    x = x * math.sqrt(d) + sd[st + "embed.pos_enc.pe"][:, : x.shape[1]]
    keep = torch.ones(1, x.shape[1], dtype=torch.bool)
    for i in range(layers_ad):
        x = wenet_layer(x, keep, sd, f"{st}encoders.{i}.", heads_ad, F.relu)
    x = F.layer_norm(x, (d,), sd[st + "after_norm.weight"], sd[st + "after_norm.bias"], 1e-5)
    x = F.linear(x, sd["speech_llama_proj.weight"], sd["speech_llama_proj.bias"])
    emb = sd["speech_token_emded.weight"]
    return torch.cat([emb[SPEECH_TOKEN_NUM][None, None], x, emb[SPEECH_TOKEN_NUM + 1][None, None]], 1)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("osum")
    cfg = load_config(TINY, OSUM_TINY)
    model, _ = build_model(cfg)
    sd = osum_state(cfg, model)
    torch.save(sd, root / "infer.pt")
    assert convert_main(["--osum", str(root / "infer.pt"), "--output", str(root / "init")]) == 0
    return cfg, sd, root


def test_osum_checkpoint_converts_and_every_tensor_lands_in_place(converted):
    import json

    cfg, sd, root = converted
    report = json.loads((root / "init" / "conversion.json").read_text())
    left = report["left_out"]
    assert "ln_speech.weight" in left and "speaker_head.weight" in left
    assert f"speech_token_emded.weight[0:{SPEECH_TOKEN_NUM}]" in left
    assert all(k.startswith("llama_model.") and "lora_" not in k for k in left if "llama" in k)
    model, _ = build_model(load_config(TINY, OSUM_TINY + [f"model.init_from={root / 'init'}"]))
    load_trainable(model, root / "init")
    ours = dict(model.named_parameters())
    for osum_key, our_key in report["mapped"].items():
        if osum_key == "speech_token_emded.weight":
            torch.testing.assert_close(ours["adapter.speech_bos"], sd[osum_key][SPEECH_TOKEN_NUM])
            torch.testing.assert_close(ours["adapter.speech_eos"], sd[osum_key][SPEECH_TOKEN_NUM + 1])
            continue
        torch.testing.assert_close(ours[our_key], sd[osum_key].reshape(ours[our_key].shape), msg=osum_key)
    # Every encoder, adapter and LoRA parameter of the model comes from the checkpoint.
    targets = set(report["mapped"].values()) - {report["mapped"]["speech_token_emded.weight"]}
    targets |= {"adapter.speech_bos", "adapter.speech_eos"}
    wanted = {k for k in ours if k.startswith(("encoder.", "adapter.")) or "lora_" in k}
    assert wanted == targets
    assert report["summary"]["lora_tensors"] == 2 * 6 * model.causal_lm.config.num_hidden_layers


def test_osum_adapter_computes_what_osum_computes(converted):
    cfg, sd, root = converted
    model, _ = build_model(cfg)
    load_trainable(model, root / "init")
    model.eval()
    audio, _ = speech("activated")
    mel = log_mel(np.resize(audio, 301 * 160 + 159))[None, :, :301]
    enc = model.encoder.config
    a = cfg.model.adapter.resolved()
    with torch.no_grad():
        ours, n = model.encode_speech(mel, torch.tensor([301]))
        ref = osum_speech_embeddings(
            sd, mel, enc.encoder_layers, enc.encoder_attention_heads, a.layers, a.heads
        )
    assert ours.shape == ref.shape and int(n) == ref.shape[1] == 38 + 2
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-4)


def test_training_starts_from_the_converted_osum_weights(converted, tmp_path):
    """A user fine-tunes OSUM on our data: init_from the converted checkpoint, one step."""
    from osum_data.demo.task_cuts import demo_task_cuts
    from training.checkpoint import checkpoint_dirs
    from training.train import train

    cfg, sd, root = converted
    manifest = tmp_path / "cuts.jsonl.gz"
    demo_task_cuts(4, max_duration=3.6).to_file(manifest)
    overrides = OSUM_TINY + [
        f"model.init_from={root / 'init'}",
        "optim.max_steps=1",
        "optim.lr=0",
        "data.max_duration=20",
    ]
    train(load_config(TINY, overrides), [str(manifest)], tmp_path / "run")
    saved = torch.load(checkpoint_dirs(tmp_path / "run")[-1] / "model.pt", weights_only=True)
    torch.testing.assert_close(saved["adapter.speech_llama_proj.weight"], sd["speech_llama_proj.weight"])
    key = "llama_model.base_model.model.model.layers.1.mlp.down_proj.lora_B.default.weight"
    torch.testing.assert_close(saved[key.replace("llama_model.", "llm.")], sd[key])


def test_an_unknown_osum_key_is_named(tmp_path):
    from training.osum_checkpoint import convert

    with pytest.raises(ValueError, match="speech_transformer.extra.weight"):
        convert({"speech_transformer.extra.weight": torch.zeros(1)})


def test_the_llm_check_tells_whether_osums_base_llm_is_the_local_one(converted, tmp_path):
    from safetensors.torch import save_file

    from training.osum_checkpoint import check_llm

    cfg, sd, root = converted
    emb = sd["llama_model.base_model.model.model.embed_tokens.weight"]
    save_file({"model.embed_tokens.weight": emb.clone()}, tmp_path / "model.safetensors")
    assert check_llm(sd, tmp_path)["result"] == "equal"
    save_file({"model.embed_tokens.weight": emb + 0.5}, tmp_path / "model.safetensors")
    assert check_llm(sd, tmp_path)["result"].startswith("differs (max abs diff 0.5")


def test_osum_config_reproduces_osums_published_settings():
    """configs/osum_qwen2_7b.yaml against OSUM's conf/config_llm_huawei_base-version.yaml,
    conf/ds_stage2.json and LLMASR_Model (the fidelity table of README.md)."""
    cfg = load_config(REPO / "training" / "configs" / "osum_qwen2_7b.yaml")
    m, d, o, t, g = cfg.model, cfg.data, cfg.optim, cfg.train, cfg.decode
    a = m.adapter.resolved()
    assert (a.type, a.layers, a.heads, a.ffn_dim, a.dropout) == ("osum", 4, 4, 2560, 0.1)
    assert (m.lora.r, m.lora.alpha, m.lora.dropout) == (8, 32, 0.1)
    assert m.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"]
    assert m.train == ["adapter", "encoder", "lora"] and m.encoder.dropout == 0.1
    assert (o.lr, o.betas, o.eps, o.weight_decay) == (5e-5, [0.9, 0.99], 1e-6, 0.01)
    assert (o.decay, o.warmup_steps, o.clip, o.grad_accum) == ("inverse_sqrt", 8000, 5.0, 4)
    assert (d.max_duration, d.max_tokens, d.max_cut_duration, d.max_target_tokens) == (39.0, 1900, 29.0, 200)
    s = d.spec_augment
    assert (s.freq_masks, s.freq_width, s.time_masks, s.time_width_frames, s.fill) == (2, 10, 2, 50, "zero")
    assert (s.sub_masks, s.sub_width) == (3, 30)
    assert (d.chat_template, d.eos_token, d.instruction, d.n_mels) == (False, "<|endoftext|>", "pool", 80)
    assert (g.num_beams, g.do_sample, g.top_p, g.top_k, g.repetition_penalty) == (4, True, 0.9, 5, 1.05)
    assert (g.max_new_tokens, g.length_penalty, g.temperature) == (400, 1.0, 1.0)
    assert (t.precision, t.log_every, t.save_every) == ("bf16", 10, 1250)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_half_precision_osum_checkpoints_convert(dtype):
    """Issue 18, defect 4: DeepSpeed bf16 runs save the positional tables in bf16 (off by 0.00195
    from ours after rounding) or fp16; the check's tolerance follows the dtype. A different table
    (sin and cos swapped) is still refused at bf16's tolerance."""
    from training.adapters import sinusoids
    from training.osum_checkpoint import convert

    cfg = load_config(TINY, OSUM_TINY)
    model, _ = build_model(cfg)
    sd = {k: v.to(dtype) for k, v in osum_state(cfg, model).items()}
    table = sinusoids(5000, sd["speech_transformer.embed.pos_enc.pe"].shape[-1])
    sd["speech_transformer.embed.pos_enc.pe"] = table[None].to(dtype)
    out, report = convert(sd)
    assert "speech_transformer.embed.pos_enc.pe" in report["left_out"]
    assert out["adapter.speech_llama_proj.weight"].dtype == dtype
    swapped = table.clone()
    swapped[:, 0::2], swapped[:, 1::2] = table[:, 1::2], table[:, 0::2]
    sd["speech_transformer.embed.pos_enc.pe"] = swapped[None].to(dtype)
    with pytest.raises(ValueError, match="positional table differs .* by 1"):
        convert(sd)


def test_speech_boundary_embeddings_start_like_osums_nn_embedding():
    """Issue 18, item 6 (docs/decisions.md): the begin/end-of-speech embeddings start at N(0, 1),
    as OSUM's nn.Embedding does, i.e. at the scale of the projected speech frames beside them,
    not 50x below it."""
    from training.adapters import OsumAdapter

    torch.manual_seed(0)
    adapter = OsumAdapter(96, 96, 896, layers=1, heads=4, ffn_dim=160, dropout=0.0).eval()
    for p in (adapter.speech_bos, adapter.speech_eos):
        assert 0.9 < float(p.std()) < 1.1 and abs(float(p.mean())) < 0.1
    with torch.no_grad():
        out, lens = adapter(torch.randn(2, 40, 96), torch.tensor([40, 40]))
    frames = out[:, 1:-1].std()
    assert 0.3 < float(frames) < float(adapter.speech_bos.std())  # same order as the frames
