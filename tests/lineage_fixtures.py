"""Real cuts in the shapes of the leaks found in the demo mix (issue 16), for lineage, mix and audit
tests. Audio, the event-composite and augment stages, the long-form segmenting helper and the
templating are the real ones; speaker ids of the SER/SGC samples are assigned here (the test says so).

- `prompt_cuts`: Asterisk prompts (real recorded speech) as the demo imports them (`asterisk_<name>`);
- `event_clips`: real laughs/coughs (hedgewars-data) imported with `prepare tsv`;
- `composites`: prompts joined with those clips by the real `event_composite` stage;
- `joined_long_cut`: the demo's long recording joined from prompts, with `custom.joined_from`.
"""

from __future__ import annotations

from pathlib import Path

from lhotse import CutSet
from lhotse.cut import Cut

from osum_data.demo import SOUNDS_DIR, asterisk_transcripts, prompt_cut
from osum_data.manifest_io import write_jsonl
from osum_data.run.params import validate_params
from osum_data.run.stage import StageContext, get_stage, load_stage_modules
from osum_data.template.builder import template

load_stage_modules(["osum_data.augment.stage", "osum_data.augment.composite"])


def sentence_prompts(n: int, skip: int = 0) -> list[str]:
    texts = asterisk_transcripts()
    names = sorted(
        k
        for k, v in texts.items()
        if len(v.split()) >= 4 and "[" not in v and (SOUNDS_DIR / f"{k}.wav").exists()
    )
    return names[skip : skip + n]


def prompt_cuts(names: list[str]) -> list[Cut]:
    texts = asterisk_transcripts()
    return [prompt_cut(n, texts[n], cut_id=f"asterisk_{n.replace('/', '_')}") for n in names]


def event_clips(out: Path, limit: int = 6) -> Path:
    from osum_data.demo.para import events_input

    return events_input(out, limit=limit)


def stage(name: str, **params):
    defn = get_stage(name)
    typed, _ = validate_params(defn, params)
    return defn.factory(**typed)


def composites(speech: list[Cut], events: Path, run_dir: Path, seed: int = 0) -> list[Cut]:
    result = stage("event_composite", events=str(events))(
        speech, StageContext(seed, 0, run_dir, "event_composite")
    )
    assert not result.rejected, result.rejected
    return result.kept


def augmented(cuts: list[Cut], run_dir: Path, seed: int = 0) -> list[Cut]:
    """One gain-changed copy of each cut (plus the originals), by the real augment stage."""
    result = stage("augment", gain_db=(-6.0, 6.0), copies=1)(cuts, StageContext(seed, 0, run_dir, "augment"))
    assert not result.rejected, result.rejected
    return result.kept


def joined_long_cut(out: Path, n_prompts: int = 4) -> Cut:
    """The demo's long-form input builder, shortened: prompts joined with pauses, imported, with the
    prompts it was joined from recorded."""
    from osum_data.corpora import prepare
    from osum_data.demo.joined import longform_recording, record_joined_from

    audio_dir = longform_recording(out, n_prompts=n_prompts)
    prepare("longform", audio_dir, out / "import")
    record_joined_from(out / "import" / "cuts.jsonl.gz", out / "reference.json")
    return next(iter(CutSet.from_file(out / "import" / "cuts.jsonl.gz")))


def samples(
    cuts: list[Cut], task: str, path: Path, speakers: list[str] | None = None, gender: bool = False
) -> Path:
    """The cuts templated as samples of `task` (X-only where a cut has no transcript); `speakers`
    replaces the speaker ids and `gender` sets alternating genders (both invented here)."""
    rows = []
    for i, cut in enumerate(cuts):
        cut = CutSet.from_dicts([cut.to_dict()])[0]
        sup = cut.supervisions[0]
        if speakers:
            sup.speaker = speakers[i % len(speakers)]
        if gender:
            sup.gender = "female" if i % 2 else "male"
        cut.custom = {
            k: v for k, v in (cut.custom or {}).items() if k not in ("task", "target", "instruction")
        }
        rows.append(template(cut, task=task).to_dict())
    write_jsonl(path, rows)
    return path
