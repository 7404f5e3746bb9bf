"""The demo's input for the LLM pipelines (SSR, STTC): a few dozen of the Asterisk prompts, spread over
the whole set, so the embedded 135M model answers in a minute or two on 2 cores."""

from __future__ import annotations

from pathlib import Path

from osum_data.demo import SOUNDS_DIR, asterisk_transcripts, write_tsv

DEFAULT_SIZE = 24


def subset_size(limit: int | None) -> int:
    """24 prompts, fewer when the demo runs with a small `--limit` (a tenth of it, at least 6)."""
    return DEFAULT_SIZE if limit is None else max(6, min(DEFAULT_SIZE, limit // 10))


def asterisk_llm_subset(output: Path, limit: int | None = None) -> Path:
    """Prompts of 4 to 16 words without bracketed notes (sentences someone could say or answer), evenly
    spaced over the sorted list, imported with `prepare tsv` into `output/llm_subset/`."""
    from osum_data.corpora import prepare

    texts = asterisk_transcripts()
    names = [
        k
        for k in sorted(texts)
        if (SOUNDS_DIR / f"{k}.wav").exists()
        and 4 <= len(texts[k].split()) <= 16
        and not any(c in texts[k] for c in "[]()")
    ]
    n = min(subset_size(limit), len(names))
    chosen = [names[i * len(names) // n] for i in range(n)]
    corpus = output / "llm_subset" / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    rows = [
        [f"asterisk_{k.replace('/', '_')}", str(SOUNDS_DIR / f"{k}.wav"), texts[k], "en", "allison", "female"]
        for k in chosen
    ]
    write_tsv(corpus / "metadata.tsv", ["id", "audio", "text", "language", "speaker", "gender"], rows)
    report = prepare("tsv", corpus, output / "llm_subset" / "import")
    print(report.summary())
    return output / "llm_subset" / "import" / "cuts.jsonl.gz"
