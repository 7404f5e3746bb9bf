"""Issue 18, defect 3: s3:// (and gs://) inputs through fsspec. A real S3 API on loopback: moto's
server (ThreadedMotoServer, started here), data uploaded with boto3, read by the trainer's data
path through s3fs. GCS has no local server here; gs:// goes through the same fsspec backend."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import importlib.util  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

from osum_data.demo.task_cuts import demo_task_cuts  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from training.config import DataConfig, load_config  # noqa: E402
from training.data import make_loader, open_cuts  # noqa: E402
from training.sequence import PromptFormat  # noqa: E402
from training.stream import Source, resolve  # noqa: E402
from training.weights import load_tokenizer  # noqa: E402

TINY = REPO / "training" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A bucket on a moto S3 server on loopback holding a Shar set, a manifest and a fields file."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}  # fmt: skip
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        root = tmp_path_factory.mktemp("s3src")
        cuts = demo_task_cuts(5)
        (root / "shar").mkdir()
        cuts.to_shar(root / "shar", fields={"recording": "flac"}, shard_size=2)
        cuts.to_file(root / "cuts.jsonl.gz")
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="data")
        for p in (root / "shar").iterdir():
            client.upload_file(str(p), "data", f"shar/{p.name}")
        client.upload_file(str(root / "cuts.jsonl.gz"), "data", "asr/cuts.jsonl.gz")
        fields = {f: [f"s3://data/shar/{f}.{i:06d}.{ext}" for i in range(3)]
                  for f, ext in (("cuts", "jsonl.gz"), ("recording", "tar"))}  # fmt: skip
        client.put_object(Bucket="data", Key="fields.yaml", Body=yaml.safe_dump(fields).encode())
        yield sorted(c.id for c in cuts)
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.mark.slow  # moto's server imports every AWS service it mocks (minutes on a loaded machine)
def test_shar_and_manifests_are_read_from_s3(s3):
    ids = s3
    fmt = PromptFormat(load_tokenizer(load_config(TINY).model.llm.tokenizer))
    cfg = DataConfig(max_duration=100.0, num_workers=0, bucketing=False)
    for spec in ("s3://data/shar/", "s3://data/fields.yaml", "s3://data/asr/cuts.jsonl.gz", "s3://data/asr/"):
        batches = list(make_loader(open_cuts(spec), fmt, cfg, seed=0, train=False, epochs=1))
        assert sorted(i for b in batches for i in b["ids"]) == ids, spec
        assert all(b["mel"].abs().sum() > 0 for b in batches), spec
    # The training stream: shards split over 2 ranks, each reading only its own from S3.
    parts = [[c.id for c in Source("s3://data/shar/", seed=0, rank=r, world=2).cuts(0)] for r in (0, 1)]
    assert sorted(parts[0] + parts[1]) == ids and not set(parts[0]) & set(parts[1])


def test_a_missing_object_store_client_is_one_line_naming_the_package(monkeypatch):
    """As on a machine without s3fs/gcsfs (hidden from importlib here; gcsfs is absent anyway)."""
    real = importlib.util.find_spec
    hidden = ("s3fs", "gcsfs")
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n in hidden else real(n, *a))
    for spec, package in (("gs://bucket/shar/", "gcsfs"), ("s3://bucket/cuts.jsonl.gz", "s3fs")):
        with pytest.raises(ModuleNotFoundError) as e:
            resolve(spec)
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(spec) and f"needs the {package} package" in msg
