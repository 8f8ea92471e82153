"""S3 for enrich-batch: a batch job's output prefix in, one object out by multipart upload.

In: `s3://bucket/prefix/` is every object under the prefix whose key ends in `.out` (what a
Personalize batch inference job writes: `<input name>.out`) or `.out.gz`, in key order; gzip is
recognised by its magic bytes and read transparently. Each object is streamed (GetObject), never
held: a read that breaks mid-body is taken up again from the byte it stopped at (a ranged
GetObject, feeding the same gzip decompressor), up to READ_ATTEMPTS times; the failures botocore
retries itself (5xx, throttling) come on top.

Out: `s3://bucket/key` is written by a multipart upload of PART_BYTES parts, so memory holds one
part whatever the output's size; a run that fails aborts the upload (no half object is left, and
no parts to pay for). An output on S3 cannot be resumed: --resume needs a file.

Credentials and region come from the usual AWS chain (environment, profile, instance or task
role); AWS_ENDPOINT_URL_S3 points the client at an S3-compatible server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from service.adapters.batch_run import BatchFailed, Part, Sink
from service.errors import ValidationFailed
from service.runtime.settings import Settings

log = logging.getLogger(__name__)

PART_BYTES = 8 * 1024 * 1024  # S3's minimum part is 5 MiB (the last one excepted)
READ_BYTES = 1024 * 1024
READ_ATTEMPTS = 4
GZIP_MAGIC = b"\x1f\x8b"
SUFFIXES = (".out", ".out.gz")
# botocore's standard retries (5xx, throttling, with backoff); AWS_MAX_ATTEMPTS sets how many.
RETRIES = {"mode": "standard"}


def client_config() -> Config:
    # An S3-compatible server at an address (MinIO, a local test server) has no bucket
    # subdomains: path-style there; AWS's own endpoints as botocore picks.
    if os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"):
        return Config(retries=RETRIES, s3={"addressing_style": "path"})
    return Config(retries=RETRIES)


def split_url(url: str) -> tuple[str, str]:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise ValidationFailed.of("IN" if url.endswith("/") else "OUT",
                                  f"{url!r} names no bucket (s3://bucket/prefix/)")
    return bucket, key


@contextlib.asynccontextmanager
async def s3_client() -> AsyncIterator[Any]:
    async with get_session().create_client("s3", config=client_config()) as client:
        yield client


async def object_parts(url: str, shard: tuple[int, int], settings: Settings) -> list[Part]:
    """Every batch output object under the prefix, in key order; of them, the shard's."""
    bucket, prefix = split_url(url)
    keys: list[str] = []
    try:
        async with s3_client() as client:
            async for page in client.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=prefix):
                keys.extend(o["Key"] for o in page.get("Contents", ())
                            if o["Key"].endswith(SUFFIXES))
    except (BotoCoreError, ClientError) as exc:
        raise BatchFailed(f"cannot list {url}: {exc}") from None
    if not keys:
        raise BatchFailed(f"no *.out objects under {url}")
    index, count = shard
    return [Part(key, 0, None, _reader(bucket, key))
            for position, key in enumerate(sorted(keys)) if position % count == index]


def _reader(bucket: str, key: str):
    return lambda offset: object_blocks(bucket, key, offset)


async def object_blocks(bucket: str, key: str, offset: int) -> AsyncIterator[bytes]:
    """The object's bytes (gunzipped when gzip) from `offset` (of those bytes) on."""
    async with s3_client() as client:
        head = await _get(client, bucket, key, "bytes=0-1")
        gzipped = head == GZIP_MAGIC
        inflate = zlib.decompressobj(wbits=31) if gzipped else None
        position = 0 if gzipped else offset  # where the next GetObject starts, in object bytes
        skip = offset if gzipped else 0  # bytes of the decompressed stream to pass over
        attempts = 0
        while True:
            try:
                response = await client.get_object(
                    Bucket=bucket, Key=key,
                    **({"Range": f"bytes={position}-"} if position else {}))
                async with response["Body"] as body:
                    while block := await body.read(READ_BYTES):
                        position += len(block)
                        if inflate is not None:
                            block = inflate.decompress(block)
                        if skip:
                            taken = min(skip, len(block))
                            block, skip = block[taken:], skip - taken
                        if block:
                            yield block
                break
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                    break  # resumed at the very end of the object
                raise BatchFailed(f"cannot read s3://{bucket}/{key}: {exc}") from None
            except (TimeoutError, BotoCoreError, OSError, aiohttp.ClientError) as exc:
                attempts += 1
                if attempts >= READ_ATTEMPTS:
                    raise BatchFailed(f"reading s3://{bucket}/{key} failed {attempts} times "
                                      f"({exc}); resume with --resume") from None
                log.warning("s3 read broke; reading on from where it stopped",
                            extra={"key": key, "position": position, "attempt": attempts})
                await asyncio.sleep(0.2 * 2 ** attempts)  # backoff before asking again
        if inflate is not None and (tail := inflate.flush()):
            yield tail[skip:] if skip < len(tail) else b""


async def _get(client: Any, bucket: str, key: str, byte_range: str) -> bytes:
    try:
        response = await client.get_object(Bucket=bucket, Key=key, Range=byte_range)
        async with response["Body"] as body:
            return await body.read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "InvalidRange":
            return b""  # an empty object
        raise BatchFailed(f"cannot read s3://{bucket}/{key}: {exc}") from None
    except BotoCoreError as exc:
        raise BatchFailed(f"cannot read s3://{bucket}/{key}: {exc}") from None


class S3Sink(Sink):
    """The output as one object, written a part at a time."""

    def __init__(self, client_context: Any, client: Any, bucket: str, key: str,
                 upload_id: str) -> None:
        self._context = client_context
        self._client = client
        self.bucket, self.key, self.upload_id = bucket, key, upload_id
        self._buffer = bytearray()
        self._parts: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, url: str, settings: Settings) -> S3Sink:
        bucket, key = split_url(url)
        if not key or key.endswith("/"):
            raise ValidationFailed.of("OUT", f"{url!r} must name an object: s3://bucket/key")
        context = s3_client()
        client = await context.__aenter__()
        try:
            created = await client.create_multipart_upload(
                Bucket=bucket, Key=key, ContentType="application/x-ndjson")
        except (BotoCoreError, ClientError) as exc:
            await context.__aexit__(None, None, None)
            raise BatchFailed(f"cannot write {url}: {exc}") from None
        return cls(context, client, bucket, key, created["UploadId"])

    async def write(self, data: bytes) -> None:
        self._buffer += data
        self.written += len(data)
        if len(self._buffer) >= PART_BYTES:
            await self._upload(bytes(self._buffer))
            self._buffer.clear()

    async def _upload(self, data: bytes) -> None:
        number = len(self._parts) + 1
        try:
            answer = await self._client.upload_part(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number,
                Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise BatchFailed(f"uploading part {number} of s3://{self.bucket}/{self.key} "
                              f"failed: {exc}") from None
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    async def close(self) -> None:
        try:
            if self._buffer or not self._parts:  # the last part may be small (or the only one)
                await self._upload(bytes(self._buffer))
                self._buffer.clear()
            await self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                MultipartUpload={"Parts": self._parts})
        except BaseException:
            await self.abort()
            raise
        await self._context.__aexit__(None, None, None)

    async def abort(self) -> None:
        with contextlib.suppress(BotoCoreError, ClientError):
            await self._client.abort_multipart_upload(Bucket=self.bucket, Key=self.key,
                                                      UploadId=self.upload_id)
        await self._context.__aexit__(None, None, None)
