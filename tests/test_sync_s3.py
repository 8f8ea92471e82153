"""`sync` reads what `enrich-batch` reads, S3 included: a batch job's output prefix (every `*.out`
object in key order, gzip read transparently), raw Personalize lines enriched by enrich-batch's
own code, and enrich-batch's output itself, against moto's S3 server."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.adapters.sync.command import run_sync
from service.cli import build_parser
from service.runtime.settings import Settings
from tests.support.fake_braze import FakeBraze
from tests.test_batch import run_here
from tests.test_batch_s3 import put, s3  # noqa: F401 - `s3`: a fixture
from tests.test_sync import (  # noqa: F401 - `shop`, `fast`: fixtures
    ATTRIBUTE,
    COMBOS,
    KEY,
    dead_letter_keys,
    fast,
    shop,
    sync,
)

pytestmark = pytest.mark.slow  # starts a server


def job_output(first: int, count: int) -> bytes:
    """Personalize USER_PERSONALIZATION output lines, user n recommended COMBOS[n % 24]."""
    return b"".join(orjson.dumps({
        "input": {"userId": f"u{n:06d}"},
        "output": {"recommendedItems": COMBOS[n % len(COMBOS)],
                   "scores": [round(1 / (k + 2), 4) for k in range(len(COMBOS[n % len(COMBOS)]))]},
        "error": None}) + b"\n" for n in range(first, first + count))


def items_by_user(enriched: bytes) -> dict[str, list[dict[str, Any]]]:
    answers = map(orjson.loads, enriched.splitlines())
    return {answer["key"]: answer["items"] for answer in answers if "items" in answer}


async def test_a_job_output_prefix_raw_then_enriched(shop, fast: Settings, s3,  # noqa: F811
                                                     tmp_path: Path, capsys, monkeypatch):
    client, _, bucket = s3
    monkeypatch.setenv("BRAZE_API_KEY", KEY)
    failed = orjson.dumps({"input": {"userId": "u-failed"}, "output": None,
                           "error": "the model failed"}) + b"\n"
    plain, zipped = job_output(0, 700), job_output(700, 500) + failed
    await put(client, bucket, "job/users-a.json.out", plain)
    await put(client, bucket, "job/users-b.json.out.gz", gzip.compress(zipped))
    await put(client, bucket, "job/_manifest.json", b'{"not": "output"}')
    # What enrich-batch answers for the same lines: every profile must show exactly its items.
    (tmp_path / "job.out").write_bytes(plain + zipped)
    assert await run_here(fast, "--tenant", "acme", "--recommender", "shop",
                          str(tmp_path / "job.out"), str(tmp_path / "expected.ndjson")) == 0
    expected = items_by_user((tmp_path / "expected.ndjson").read_bytes())
    assert len(expected) == 1200 and all("score" in item for item in expected["u000000"])

    argv = ("braze", "--tenant", "acme", "--recommender", "shop", "--attribute", ATTRIBUTE,
            "--checkpoint", str(tmp_path / "checkpoint"))
    raw = await FakeBraze(KEY).start()
    try:
        status, summary = await sync(fast, capsys, *argv, "--endpoint", raw.url,
                                     "--dead-letter", str(tmp_path / "dead.ndjson"),
                                     f"s3://{bucket}/job/")
    finally:
        await raw.stop()
    assert status == 1 and summary["users"] == 1201 and summary["sent"] == 1200
    assert {user: p[ATTRIBUTE]["items"] for user, p in raw.profiles.items()} == expected
    assert raw.users_written_twice() == []
    assert dead_letter_keys(tmp_path / "dead.ndjson") == {
        "u-failed": "input: the batch inference job failed for this line: the model failed"}

    # enrich-batch's own output, on S3, read back by sync: the same profiles.
    assert await run_here(fast, "--tenant", "acme", "--recommender", "shop",
                          f"s3://{bucket}/job/", f"s3://{bucket}/enriched/shop.out") == 0
    enriched = await FakeBraze(KEY).start()
    try:
        status, summary = await sync(fast, capsys, *argv, "--endpoint", enriched.url,
                                     f"s3://{bucket}/enriched/")
    finally:
        await enriched.stop()
    assert status == 1 and summary["sent"] == 1200 and summary["input_errors"] == 1
    assert {user: p[ATTRIBUTE]["items"] for user, p in enriched.profiles.items()} == expected


async def test_resuming_an_s3_input_needs_a_checkpoint_file(shop, fast, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setenv("BRAZE_API_KEY", KEY)
    args = build_parser().parse_args([
        "sync", "braze", "--tenant", "acme", "--recommender", "shop", "--attribute", ATTRIBUTE,
        "--endpoint", "http://127.0.0.1:9", "--resume", "s3://bucket/job/"])
    assert await run_sync(fast, args) == 2
    assert "--checkpoint FILE" in capsys.readouterr().err
