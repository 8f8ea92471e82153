"""enrich-batch on S3: a prefix of batch output objects in (name order, gzip read transparently),
one object out by multipart upload, against a real S3 server (moto's) with faults injected."""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path

import moto.s3.models
import pytest

from service.adapters import batch_s3
from service.adapters.batch_run import BatchFailed
from service.runtime.settings import Settings
from tests.support.api import Api
from tests.support.s3_server import s3_server
from tests.test_batch import api, personalize_lines, run_here  # noqa: F401 - `api`: a fixture

pytestmark = pytest.mark.slow  # starts a server



@pytest.fixture
async def s3(aws_env, monkeypatch):
    async with s3_server() as (url, faults):
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", url)
        async with batch_s3.s3_client() as client:
            bucket = f"nightly-{uuid.uuid4().hex[:12]}"  # moto keeps buckets per process
            await client.create_bucket(Bucket=bucket)
            yield client, faults, bucket


async def put(client, bucket: str, key: str, data: bytes) -> None:
    await client.put_object(Bucket=bucket, Key=key, Body=data)


async def get(client, bucket: str, key: str) -> bytes:
    response = await client.get_object(Bucket=bucket, Key=key)
    async with response["Body"] as body:
        return await body.read()


async def load_job_output(client, bucket: str) -> bytes:
    """Three output objects (one gzipped) and one that is not output; their lines in name order."""
    parts = [personalize_lines(30), personalize_lines(25, start=30),
             personalize_lines(600, start=55)]
    await put(client, bucket, "job/users-b.json.out.gz", gzip.compress(parts[1]))
    await put(client, bucket, "job/users-a.json.out", parts[0])
    await put(client, bucket, "job/users-c.json.out", parts[2])
    await put(client, bucket, "job/_manifest.json", b'{"not": "output"}')
    return b"".join(parts)


async def test_prefix_in_multipart_out_through_faults_and_shards(api: Api, settings: Settings, s3,  # noqa: F811
                                                      tmp_path: Path, monkeypatch):
    client, faults, bucket = s3
    data = await load_job_output(client, bucket)
    plain, expected = tmp_path / "all.out", tmp_path / "expected.ndjson"
    plain.write_bytes(data)
    assert await run_here(settings, "--tenant", "acme", "--recommender", "movies", str(plain),
                          str(expected)) == 0
    monkeypatch.setattr(batch_s3, "PART_BYTES", 64 * 1024)  # several parts from a small output
    # S3's 5 MiB minimum part (moto's too, lowered here): parts, not megabytes, are the point.
    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", 256)
    faults.get_errors, faults.get_cuts, faults.part_errors = 1, 1, 1
    assert await run_here(settings, "--tenant", "acme", "--recommender", "movies",
                          "--chunk-lines", "100", f"s3://{bucket}/job/",
                          f"s3://{bucket}/enriched/movies.ndjson") == 0
    assert await get(client, bucket, "enriched/movies.ndjson") == expected.read_bytes()
    assert (faults.get_errors, faults.get_cuts, faults.part_errors) == (0, 0, 0)  # all met
    assert faults.seen["upload_part"] > 2

    # --shard K/N over a prefix: every N-th object from the K-th, the union the whole output.
    parts = []
    for index in range(2):
        target = tmp_path / f"part-{index}.ndjson"
        assert await run_here(settings, "--tenant", "acme", "--recommender", "movies",
                              "--shard", f"{index}/2", f"s3://{bucket}/job/", str(target)) == 0
        parts.append(target.read_bytes().splitlines())
    assert parts[0] and parts[1]
    assert sorted(parts[0] + parts[1]) == sorted(expected.read_bytes().splitlines())


async def test_a_part_that_keeps_failing_leaves_no_object(api: Api, settings: Settings, s3,  # noqa: F811
                                                         monkeypatch):
    client, faults, bucket = s3
    await load_job_output(client, bucket)
    faults.part_errors = 100
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # botocore's retries, fewer: the end is the point
    with pytest.raises(BatchFailed, match=r"uploading part 1 .* failed"):
        await run_here(settings, "--tenant", "acme", "--recommender", "movies",
                       f"s3://{bucket}/job/", f"s3://{bucket}/enriched/movies.ndjson")
    listed = await client.list_objects_v2(Bucket=bucket, Prefix="enriched/")
    assert listed.get("KeyCount", 0) == 0
    uploads = await client.list_multipart_uploads(Bucket=bucket)
    assert not uploads.get("Uploads")  # aborted: no parts left to pay for
