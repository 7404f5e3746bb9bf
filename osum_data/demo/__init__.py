"""`make demo`: the main job end to end on real recorded speech, with no GPU, key or download.

The corpus is Debian's Asterisk prompts (one female speaker, 8 kHz, hundreds of utterances with
transcripts). `pipelines/demo.yaml` is a plan (osum_data.plan): the task pipelines to run over it,
their exports, the mix of all tasks, the report and a short training run.
"""

from __future__ import annotations

import filecmp
import gzip
import json
import os
from pathlib import Path

SOUNDS_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
DEBIAN_PACKAGES = ("asterisk-core-sounds-en-wav", "asterisk-core-sounds-en")


def asterisk_transcripts(path: Path = TRANSCRIPTS) -> dict[str, str]:
    """Prompt name (e.g. 'digits/1') -> transcript, from the package's `name: text` list."""
    out = {}
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if ":" not in line or line.startswith(";"):
                continue
            name, text = line.split(":", 1)
            if name.strip() and " " not in name.strip():
                out[name.strip()] = text.strip()
    return out


def build_asterisk_corpus(out_dir: Path, sounds_dir: Path = SOUNDS_DIR, limit: int | None = None) -> Path:
    """Write `out_dir/metadata.tsv` (the `prepare tsv` layout) for every prompt with a WAV and a
    transcript; audio paths are absolute, so nothing is copied."""
    if not sounds_dir.is_dir() or not TRANSCRIPTS.exists():
        raise FileNotFoundError(
            f"demo corpus not found ({sounds_dir}, {TRANSCRIPTS}); install the Debian packages "
            f"{' '.join(DEBIAN_PACKAGES)} (`make demo` does it when run as root)"
        )
    texts = asterisk_transcripts()
    rows = []
    for name, text in sorted(texts.items()):
        wav = sounds_dir / f"{name}.wav"
        if wav.exists():
            rows.append([f"asterisk_{name.replace('/', '_')}", str(wav), text, "en", "allison", "female"])
    rows = rows[:limit] if limit else rows
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = out_dir / "metadata.tsv"
    write_tsv(meta, ["id", "audio", "text", "language", "speaker", "gender"], rows)
    return meta


def write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """A metadata.tsv as `prepare tsv` reads it: tab-separated, no quoting (a transcript's quotes
    are kept as written); tabs and line breaks inside a cell become spaces."""

    def cell(value: object) -> str:
        return " ".join(str(value).replace("\t", " ").splitlines())

    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in [header, *rows]:
            f.write("\t".join(cell(v) for v in row) + "\n")


def part_path(final: Path) -> Path:
    """Where a builder writes a file before `keep_or_replace` (same folder and suffix, so tools that
    read the format from the name, like sox, still see it)."""
    return final.with_name(f"{final.stem}.part{final.suffix}")


def keep_or_replace(new: Path, final: Path) -> bool:
    """Move `new` onto `final` unless `final` already holds the same bytes (then `new` is dropped and
    `final` keeps its mtime). The demo's inputs are seeded, so a second `make demo` makes the same
    bytes; keeping the files untouched lets the side-input resume key (path, size, mtime of each
    audio file) see that nothing changed. Returns whether `final` was replaced."""
    if final.is_file() and filecmp.cmp(new, final, shallow=False):
        new.unlink()
        return False
    os.replace(new, final)
    return True


def asterisk_input(output: Path, limit: int | None = None) -> Path:
    """The demo's main input: the Asterisk prompts as a metadata.tsv, imported by `prepare tsv`."""
    from osum_data.corpora import prepare

    corpus_dir = output / "corpus"
    build_asterisk_corpus(corpus_dir, limit=limit)
    report = prepare("tsv", corpus_dir, output / "import")
    print(report.summary())
    return output / "import" / "cuts.jsonl.gz"


def run_demo(
    output: Path = Path("manifests/demo"),
    plan: Path = Path("pipelines/demo.yaml"),
    workers: int = 2,
    limit: int | None = None,
    progress: bool = True,
) -> dict:
    """Run the demo plan (inputs, every pipeline, exports, the mix, the report, a short training);
    returns the summaries. The plan format is described in `osum_data.plan`."""
    from osum_data.plan import run_plan

    return run_plan(plan, output, workers=workers, limit=limit, progress=progress)


def prompt_cut(name: str, text: str, cut_id: str | None = None):
    """One demo prompt as a cut with its transcript and the speaker's known metadata."""
    from lhotse import Recording, SupervisionSegment

    cut_id = cut_id or name.replace("/", "_")
    rec = Recording.from_file(SOUNDS_DIR / f"{name}.wav", recording_id=cut_id)
    cut = rec.to_cut()
    cut.id = cut_id
    cut.supervisions = [
        SupervisionSegment(
            id=cut_id,
            recording_id=rec.id,
            start=0,
            duration=rec.duration,
            text=text,
            language="en",
            speaker="allison",
            gender="female",
        )
    ]
    return cut


def write_cycled_manifest(path: Path, n: int, names: list[str] | None = None) -> Path:
    """A raw (untemplated) manifest of `n` cuts cycling over the demo prompts `names` (default: all
    with a WAV), each with a distinct id and the shared real audio: corpus-sized inputs for tests
    and benchmarks of the runner without copying any audio."""
    from osum_data.manifest_io import write_jsonl

    texts = asterisk_transcripts()
    names = names or [k for k in sorted(texts) if (SOUNDS_DIR / f"{k}.wav").exists()]
    base = [json.dumps(prompt_cut(name, texts[name]).to_dict()) for name in names]

    def items():
        for i in range(n):
            d = json.loads(base[i % len(base)])
            d["id"] = d["supervisions"][0]["id"] = f"{d['id']}-{i:07d}"
            yield d

    write_jsonl(path, items())
    return path
