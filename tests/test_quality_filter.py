"""Quality thresholds from YAML: validation, reject codes, keep_measures_only, and a real run of
pipelines/quality.yaml on Ray over real speech and degraded copies (#17 item 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lhotse import MonoCut, SupervisionSegment

from osum_data.manifest_io import read_jsonl, write_jsonl
from osum_data.quality.record import set_measures
from osum_data.run.config import ConfigError, load_pipeline
from tests.conftest import REPO
from tests.quality_fixtures import built, cut_of, hard_clipped, real_speech, with_noise, write

QUALITY = REPO / "pipelines" / "quality.yaml"


def measured(cut_id: str, **values) -> MonoCut:
    sup = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0, duration=1.0, text="x")
    cut = MonoCut(id=cut_id, start=0, duration=1.0, channel=0, supervisions=[sup])
    return set_measures(cut, values, "rule:test")


THRESHOLDS = {"snr_db": {"min": 15, "code": "low_snr"}, "clipping": {"max": 0.001}}


def test_each_measure_rejects_with_its_own_code_and_detail() -> None:
    cuts = [
        measured("ok", snr_db=30.0, clipping=0.0),
        measured("noisy", snr_db=4.0, clipping=0.0),
        measured("clipped", snr_db=30.0, clipping=0.05),
        measured("both", snr_db=3.0, clipping=0.05),
        measured("unmeasured", snr_db=30.0),
    ]
    result = built("quality_filter", thresholds=THRESHOLDS)(cuts, None)
    assert [c.id for c in result.kept] == ["ok"]
    got = {c.id: (r.code, r.detail) for c, r in result.rejected}
    assert got["noisy"] == ("low_snr", "snr_db=4 < 15")
    assert got["clipped"][0] == "clipping_high"  # default code names the measure
    assert got["both"] == ("low_snr", "snr_db=3 < 15; clipping=0.05 > 0.001")
    assert got["unmeasured"][0] == "missing_measure" and "quality_clipping" in got["unmeasured"][1]
    assert result.counters["quality_codes"] == {"low_snr": 2, "clipping_high": 1, "missing_measure": 1}


def test_report_quality_section_reads_thresholds_and_keeps_files_inside(tmp_path: Path) -> None:
    """A run folder as the runner writes it, with a hostile measure name: the histogram's file
    stays in the report folder, the threshold comes from pipeline.yaml."""
    import gzip
    import json

    from osum_data.report.quality import collect_quality, quality_html, thresholds_of

    run = tmp_path / "run"
    run.mkdir()
    kept = [measured(f"k{i}", snr_db=20.0 + i, **{"../../evil": 1.0}).to_dict() for i in range(5)]
    bad = measured("r", snr_db=3.0).to_dict()
    bad["custom"] = {"reject": {"stage": "quality_filter", "code": "low_snr", "reason": "snr_db=3 < 15"}}
    for name, rows in (("cuts.jsonl.gz", kept), ("rejects.jsonl.gz", [bad])):
        with gzip.open(run / name, "wt") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    (run / "pipeline.yaml").write_text(
        "stages:\n- stage: quality_filter\n  thresholds: {snr_db: {min: 15.0, code: low_snr}}\n"
    )
    values, codes, _ = collect_quality(run)
    assert values["snr_db"] == {"kept": [20.0, 21.0, 22.0, 23.0, 24.0], "rejected": [3.0]}
    assert codes == {"quality_filter:low_snr": 1}
    assert thresholds_of(run)["snr_db"]["min"] == 15.0
    out = tmp_path / "report"
    out.mkdir()
    page = quality_html("run", run, out, "00-run")
    assert sorted(p.name for p in out.iterdir()) == ["00-run-quality--evil.png", "00-run-quality-snr_db.png"]
    assert "quality_filter:low_snr" in page
    assert not (tmp_path / "evil.png").exists()


def test_keep_measures_only_labels_without_rejecting() -> None:
    cuts = [measured("ok", snr_db=30.0, clipping=0.0), measured("noisy", snr_db=4.0, clipping=0.0)]
    result = built("quality_filter", thresholds=THRESHOLDS, keep_measures_only=True)(cuts, None)
    assert not result.rejected and len(result.kept) == 2
    flags = {c.id: c.supervisions[0].custom.get("quality_flags") for c in result.kept}
    assert flags == {"ok": None, "noisy": ["low_snr"]}
    assert result.counters["quality_codes"] == {"low_snr": 1}


@pytest.mark.parametrize(
    "override, message",
    [
        ("quality_filter.thresholds.snr.min=10", "unknown measure 'snr'"),
        ("quality_filter.thresholds.snr_db.min=abc", "thresholds.snr_db.min='abc'"),
        ("quality_filter.thresholds.clipping.min=0.5", "min 0.5 > max 0.001"),
        ("quality_filter.thresholds.snr_db.code=Low-SNR", "reject code 'Low-SNR'"),
    ],
)
def test_bad_thresholds_fail_at_load_in_one_line(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_pipeline(QUALITY, [override])
    assert message in str(e.value) and "quality_filter" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow  # a real Ray run with every quality model: minutes on the shared 2-core machine
def test_quality_pipeline_on_ray_rejects_damaged_copies_and_counts_add_up(
    tmp_path: Path, ray_session
) -> None:
    from osum_data.run.runner import run_pipeline

    clean, text = real_speech("activated")
    items = {
        "clean": clean,
        "noisy0": with_noise(clean, 0),
        "clipped": hard_clipped(clean, 8.0),
    }
    manifest = tmp_path / "in.jsonl.gz"
    write_jsonl(manifest, [cut_of(write(tmp_path / f"{k}.wav", a), text).to_dict() for k, a in items.items()])
    # The prompts are 8 kHz telephone speech: the bandwidth and DNSMOS thresholds are for wideband
    # corpora, so this run lowers them (as an 8 kHz corpus would) and tests SNR and clipping.
    cfg = load_pipeline(
        QUALITY,
        [
            "quality_filter.thresholds.bandwidth_hz.min=3000",
            "quality_filter.thresholds.dnsmos_ovrl.min=1.0",
            "quality_filter.thresholds.speech_ratio.min=0.3",
        ],
    )
    res = run_pipeline(cfg, manifest, tmp_path / "out", workers=1, progress=False)
    kept = {d["id"]: d for d in read_jsonl(tmp_path / "out" / "cuts.jsonl.gz")}
    rejected = {
        d["id"]: d["custom"]["reject"]["code"] for d in read_jsonl(tmp_path / "out" / "rejects.jsonl.gz")
    }
    assert list(kept) == ["clean"]
    assert rejected == {"noisy0": "low_snr", "clipped": "clipped"}
    assert res.summary["in"] == res.summary["out"] + res.summary["rejected"] == 3
    quality = kept["clean"]["supervisions"][0]["custom"]["quality"]
    assert {"snr_db", "clipping", "bandwidth_hz", "speech_ratio", "dnsmos_ovrl", "dnsmos_p808"} <= set(
        quality
    )
