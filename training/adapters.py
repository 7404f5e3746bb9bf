"""Adapters from Whisper encoder frames (50/s) to LLM embeddings (12.5/s).

`default` (model.adapter.type): 3 centred Conv1d (strides 1/2/2, GELU), PyTorch transformer
layers (pre-norm, GELU), LayerNorm, linear projection.

`osum`: OSUM's adapter exactly as its code builds it (ASLP-lab/OSUM, wenet/llm_asr: the `gxl`
adapter_type with downsample_rate 4), so its released weights load unchanged:
- `down_sample_2` (GxlConv1dSubsampling4): 3 Conv1d (kernel 3, strides 1/2/2) each after a
  causal left padding of 2 frames, GELU after each;
- `speech_transformer` (wenet TransformerEncoder, input_layer "linear", pos "abs_pos", pre-norm):
  Linear + LayerNorm + dropout, x * sqrt(d) + sinusoidal positions (interleaved sin/cos), dropout;
  4 layers of 4-head attention (padded keys masked) and a ReLU feed-forward of 2560, each with
  dropout on its output; a final LayerNorm;
- `speech_llama_proj`: Linear to the LLM width;
- learned begin/end-of-speech embeddings around each utterance's embeddings (OSUM's
  `speech_token_emded` rows speech_token_num and speech_token_num + 1).
Parameter names follow OSUM's modules (see training/osum_checkpoint.py for the key mapping).

Both zero the padded frames of a batch before every convolution and mask padded keys in
attention, so an utterance's embeddings do not depend on what else is in its batch. (OSUM's causal
convolutions never read frames to the right, so for it the zeroing changes nothing.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def conv_out(lengths: torch.Tensor, stride: int) -> torch.Tensor:
    """Output length of a kernel-3 Conv1d with `stride` and 2 frames of padding in total (centred,
    or causal on the left): ceil(length / stride)."""
    return (lengths - 1) // stride + 1


def speech_lengths(mel_lens: torch.Tensor, boundary_tokens: int = 0) -> torch.Tensor:
    """Number of speech embeddings the model makes from `mel_lens` frames: Whisper's conv2 (/2),
    then the adapter's convs (/2, /2): 100 frames/s -> 12.5 embeddings/s, as in OSUM; plus the
    adapter's begin/end-of-speech embeddings (`boundary_tokens`: 2 for the osum adapter)."""
    return conv_out(conv_out(conv_out(mel_lens, 2), 2), 2) + boundary_tokens


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, max_len) True at padded positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


def zero_padding(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, C, T) with the frames at and beyond each row's length set to 0: what a convolution's own
    zero padding shows it when the utterance is alone, so a centred kernel at the last real frame
    computes the same value whatever else is in the batch."""
    return x.masked_fill(padding_mask(lengths.to(x.device), x.shape[-1])[:, None, :], 0.0)


class Adapter(nn.Module):
    """The default adapter (see the module docstring)."""

    boundary_tokens = 0

    def __init__(
        self, in_dim: int, d_model: int, out_dim: int, layers: int, heads: int, ffn_dim: int, dropout: float
    ):
        super().__init__()
        self.d_model, self.num_layers = d_model, layers
        self.convs = nn.ModuleList(
            [
                nn.Conv1d(in_dim, d_model, 3, stride=1, padding=1),
                nn.Conv1d(d_model, d_model, 3, stride=2, padding=1),
                nn.Conv1d(d_model, d_model, 3, stride=2, padding=1),
            ]
        )
        layer = nn.TransformerEncoderLayer(
            d_model, heads, ffn_dim, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = (
            nn.TransformerEncoder(layer, layers, enable_nested_tensor=False) if layers else None
        )
        self.norm = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, out_dim)

    def post_conv_modules(self) -> nn.ModuleList:
        """Everything after the convolutions (all at the output rate): for FLOP counting."""
        return nn.ModuleList([m for m in (self.transformer, self.norm, self.proj) if m is not None])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.transpose(1, 2)
        for conv in self.convs:
            x = F.gelu(conv(zero_padding(x, lengths)))
            lengths = conv_out(lengths, conv.stride[0])
        x = x.transpose(1, 2)
        if self.transformer is not None:
            x = self.transformer(x, src_key_padding_mask=padding_mask(lengths.to(x.device), x.shape[1]))
        return self.proj(self.norm(x)), lengths


def sinusoids(length: int, dim: int, device=None) -> torch.Tensor:
    """(length, dim) ESPnet/WeNet absolute positions: sin at even, cos at odd channels."""
    pos = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * -(math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


class OsumAttention(nn.Module):
    """WeNet's MultiHeadedAttention (linear_q/k/v/out, all with bias) with padded keys masked."""

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.linear_q = nn.Linear(d_model, d_model)
        self.linear_k = nn.Linear(d_model, d_model)
        self.linear_v = nn.Linear(d_model, d_model)
        self.linear_out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = heads(self.linear_q(x)), heads(self.linear_k(x)), heads(self.linear_v(x))
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :], dropout_p=p)
        return self.linear_out(out.transpose(1, 2).reshape(b, t, d))


class OsumFeedForward(nn.Module):
    def __init__(self, d_model: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.w_1 = nn.Linear(d_model, ffn_dim)
        self.w_2 = nn.Linear(ffn_dim, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.dropout(F.relu(self.w_1(x))))


class OsumLayer(nn.Module):
    """WeNet's TransformerEncoderLayer with normalize_before=True."""

    def __init__(self, d_model: int, heads: int, ffn_dim: int, dropout: float, attention_dropout: float):
        super().__init__()
        self.self_attn = OsumAttention(d_model, heads, attention_dropout)
        self.feed_forward = OsumFeedForward(d_model, ffn_dim, dropout)
        self.norm1 = nn.LayerNorm(d_model, eps=1e-5)
        self.norm2 = nn.LayerNorm(d_model, eps=1e-5)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.self_attn(self.norm1(x), keep))
        return x + self.dropout(self.feed_forward(self.norm2(x)))


class OsumSpeechTransformer(nn.Module):
    """WeNet's TransformerEncoder as OSUM configures it for the adapter."""

    def __init__(self, in_dim: int, d_model: int, layers: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Sequential(
            nn.Linear(in_dim, d_model), nn.LayerNorm(d_model, eps=1e-5), nn.Dropout(dropout)
        )
        self.pos_dropout = nn.Dropout(dropout)
        self.encoders = nn.ModuleList(
            [OsumLayer(d_model, heads, ffn_dim, dropout, 0.0) for _ in range(layers)]
        )
        self.after_norm = nn.LayerNorm(d_model, eps=1e-5)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        x = self.pos_dropout(
            x * math.sqrt(self.d_model) + sinusoids(x.shape[1], self.d_model, x.device).to(x.dtype)
        )
        keep = ~padding_mask(lengths.to(x.device), x.shape[1])
        for layer in self.encoders:
            x = layer(x, keep)
        return self.after_norm(x)


class OsumAdapter(nn.Module):
    """OSUM's adapter (see the module docstring). Its output has two more positions per utterance
    than the convolutions make: the begin- and end-of-speech embeddings."""

    boundary_tokens = 2

    def __init__(
        self, in_dim: int, d_model: int, out_dim: int, layers: int, heads: int, ffn_dim: int, dropout: float
    ):
        super().__init__()
        self.d_model, self.num_layers = d_model, layers
        # OSUM's convolutions keep the encoder width; its transformer's input Linear maps to d_model.
        self.convs = nn.ModuleList(
            [nn.Conv1d(in_dim, in_dim, 3, stride=s) for s in (1, 2, 2)]  # causal: padded on the left below
        )
        self.speech_transformer = OsumSpeechTransformer(in_dim, d_model, layers, heads, ffn_dim, dropout)
        self.speech_llama_proj = nn.Linear(d_model, out_dim)
        # N(0, 1) as OSUM's nn.Embedding starts them (docs/decisions.md, issue 18): at the scale of
        # the projected speech frames beside them (std ~0.6), where 0.02 N(0, 1) made them ~30x
        # smaller than their neighbours, i.e. nearly invisible to the LLM early in training.
        self.speech_bos = nn.Parameter(torch.randn(out_dim))
        self.speech_eos = nn.Parameter(torch.randn(out_dim))

    def post_conv_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.speech_transformer, self.speech_llama_proj])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.transpose(1, 2)
        for conv in self.convs:
            x = F.gelu(conv(F.pad(zero_padding(x, lengths), (2, 0))))
            lengths = conv_out(lengths, conv.stride[0])
        x = self.speech_transformer(x.transpose(1, 2), lengths)
        speech = self.speech_llama_proj(x)
        b, n, h = speech.shape
        out = torch.cat(
            [self.speech_bos.to(speech.dtype).expand(b, 1, h), speech, speech.new_zeros(b, 1, h)], 1
        )
        rows = torch.arange(b, device=speech.device)
        out = out.index_put(
            (rows, lengths.to(speech.device) + 1), self.speech_eos.to(speech.dtype).expand(b, h)
        )
        return out, lengths + 2


ADAPTERS = {"default": Adapter, "osum": OsumAdapter}
