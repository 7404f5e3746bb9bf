"""`quality_dnsmos`: DNSMOS P.835 (SIG, BAK, OVRL) and P.808 MOS, the filter Emilia-Pipe uses.

The ONNX models, the P.808 mel features and the P.835 calibration polynomials are those of the
PyPI package `speechmos` (Microsoft's DNS-Challenge release; nothing is downloaded). What this
module adds: one onnxruntime session per worker with as many intra-op threads as the stage's
`resources.num_cpus`, and batching: every 9.01 s window of every cut in a batch goes through the
models together (`batch_size` windows a run), instead of one window per call.
Clips shorter than 9.01 s are repeated to exactly one window (the reference scorer doubles them
until long enough, then scores up to 8 shifted windows of the same sound: same idea, 8x the cost).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
from lhotse.cut import Cut
from pydantic import Field

from osum_data.quality.record import SAMPLE_RATE, mono, set_measures, stage_threads
from osum_data.run.stage import StageResult, error_reject, is_fatal, register_stage

WINDOW = int(9.01 * SAMPLE_RATE)  # the models' input length
HOP = SAMPLE_RATE  # one window a second, as the reference scorer
SOURCE = "model:dnsmos_p835+p808@speechmos-0.0.1.1"


def model_dir() -> Path:
    import speechmos

    return Path(speechmos.__file__).parent / "dnsmos_models"


def windows(audio: np.ndarray, hop: int = HOP) -> list[np.ndarray]:
    """The 9.01 s windows the reference scorer averages over, one every `hop` samples (audio
    repeated up to one window)."""
    if audio.size == 0:
        raise ValueError("empty audio")
    if audio.size < WINDOW:  # repeated up to exactly one window (the reference doubles the clip
        audio = np.resize(audio, WINDOW)  # until long enough: up to 8 windows of the same sound)
    return [audio[start : start + WINDOW] for start in range(0, audio.size - WINDOW + 1, hop)]


@register_stage("quality_dnsmos", version=1)
class Dnsmos:
    """Add `custom.quality.dnsmos_sig`, `dnsmos_bak`, `dnsmos_ovrl` (P.835) and `dnsmos_p808`."""

    def __init__(
        self,
        batch_size: Annotated[int, Field(ge=1, le=256)] = 16,
        threads: Annotated[int, Field(ge=1)] | None = None,
        hop_seconds: Annotated[float, Field(ge=0.1, le=60)] = 1.0,
    ):
        """`hop_seconds`: 1 s is the reference scorer's (each second of a long cut is scored ~9
        times); 9.01 scores long cuts 9x faster, each second once."""
        import onnxruntime as ort

        self.threads = threads or stage_threads()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self.p835 = ort.InferenceSession(str(model_dir() / "sig_bak_ovr.onnx"), opts, providers=providers)
        self.p808 = ort.InferenceSession(str(model_dir() / "model_v8.onnx"), opts, providers=providers)
        self.batch_size = batch_size
        self.hop = int(hop_seconds * SAMPLE_RATE)

    def score(self, audios: list[np.ndarray]) -> list[dict[str, float]]:
        """Scores per audio (16 kHz float32 in [-1, 1]), all windows batched together."""
        from speechmos.dnsmos import DNSMOS  # the reference features and calibration (pure methods)

        owner: list[int] = []
        wins: list[np.ndarray] = []
        for i, audio in enumerate(audios):
            for w in windows(np.clip(audio, -1.0, 1.0), self.hop):
                owner.append(i)
                wins.append(w.astype(np.float32))
        raw = np.zeros((len(wins), 3), dtype=np.float64)
        p808 = np.zeros(len(wins), dtype=np.float64)
        for start in range(0, len(wins), self.batch_size):
            chunk = wins[start : start + self.batch_size]
            raw[start : start + len(chunk)] = self.p835.run(None, {"input_1": np.stack(chunk)})[0]
            mels = np.stack([DNSMOS.audio_melspec(None, w[:-160]) for w in chunk]).astype(np.float32)
            p808[start : start + len(chunk)] = self.p808.run(None, {"input_1": mels})[0][:, 0]
        sig, bak, ovr = DNSMOS.get_polyfit_val(None, raw[:, 0], raw[:, 1], raw[:, 2], False)
        owner_arr = np.asarray(owner)
        out = []
        for i in range(len(audios)):
            m = owner_arr == i
            out.append(
                {
                    "dnsmos_sig": round(float(sig[m].mean()), 3),
                    "dnsmos_bak": round(float(bak[m].mean()), 3),
                    "dnsmos_ovrl": round(float(ovr[m].mean()), 3),
                    "dnsmos_p808": round(float(p808[m].mean()), 3),
                }
            )
        return out

    def __call__(self, cuts: list[Cut], ctx) -> StageResult:
        result = StageResult()
        loaded: list[tuple[Cut, np.ndarray]] = []
        for cut in cuts:  # a cut that fails to decode is rejected alone
            try:
                audio = mono(cut)
                if audio.size == 0:
                    raise ValueError("empty audio")
                loaded.append((cut, audio))
            except Exception as e:
                if is_fatal(e):
                    raise
                result.rejected.append((cut, error_reject(e)))
        if loaded:
            scores = self.score([a for _, a in loaded])
            result.kept.extend(set_measures(c, s, SOURCE) for (c, _), s in zip(loaded, scores, strict=True))
        result.counters["dnsmos_windows"] = sum(len(windows(a, self.hop)) for _, a in loaded)
        return result
