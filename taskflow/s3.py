"""S3LogStore: job logs in S3 or MinIO through miniopy-async (asyncio only).

``TASKFLOW_S3_URL=http://ACCESS:SECRET@host:9000/bucket`` (``https://`` for TLS;
``?region=`` optional). The bucket is created if missing; each job's log is the object
``logs/<job id>.log`` (the seed's key), JSON lines. S3 has no append: an append reads the
object and writes it back whole, which the per-job cap (``TASKFLOW_MAX_LOG_BYTES``) bounds.
Every call is bounded in time, and every failure leaves as ``LogStoreError``: the log
shipper spools what it could not write, and nothing else waits for S3.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import anyio

from taskflow.errors import ConfigError, LogStoreError

PREFIX = "logs/"
LINK_EXPIRY = timedelta(minutes=15)


@dataclass(frozen=True, slots=True, kw_only=True)
class S3Target:
    endpoint: str
    access_key: str | None
    secret_key: str | None
    secure: bool
    bucket: str
    region: str | None


def parse_s3_url(url: str) -> S3Target:
    """``http(s)://[access:secret@]host[:port]/bucket[?region=r]``; ``ConfigError`` otherwise."""
    parts = urlsplit(url)
    bucket = parts.path.strip("/")
    if parts.scheme not in ("http", "https", "s3") or not parts.hostname or not bucket:
        raise ConfigError(
            "TASKFLOW_S3_URL must look like http://ACCESS:SECRET@host:9000/bucket",
            variable="TASKFLOW_S3_URL",
        )
    if "/" in bucket:
        raise ConfigError("TASKFLOW_S3_URL names one bucket, no path", variable="TASKFLOW_S3_URL")
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    region = parse_qs(parts.query).get("region", [None])[0]
    return S3Target(
        endpoint=host,
        access_key=unquote(parts.username) if parts.username else None,
        secret_key=unquote(parts.password) if parts.password else None,
        secure=parts.scheme == "https",
        bucket=bucket,
        region=region,
    )


class S3LogStore:
    """Implements ``LogStore`` on one bucket; see the module docstring."""

    def __init__(self, client: Any, bucket: str, *, timeout: float = 10.0) -> None:
        self.client = client
        self.bucket = bucket
        self.timeout = timeout
        self.location = f"s3://{bucket}/{PREFIX}"
        self._bucket_ready = False

    @staticmethod
    def key(job_id: str) -> str:
        return f"{PREFIX}{job_id}.log"

    async def ensure_bucket(self) -> None:
        async with self._call("create the bucket"):
            if not await self.client.bucket_exists(self.bucket):
                try:
                    await self.client.make_bucket(self.bucket)
                except Exception as exc:  # another process created it meanwhile
                    if "BucketAlreadyOwnedByYou" not in repr(exc):
                        raise
        self._bucket_ready = True

    async def append(self, entries: Mapping[str, bytes]) -> None:
        if not self._bucket_ready:  # S3 was down at start
            await self.ensure_bucket()
        failures: list[str] = []

        async def one(job_id: str, data: bytes) -> None:
            try:
                old = await self.read(job_id) or b""
                whole = old + data
                async with self._call(f"write the log of {job_id}"):
                    await self.client.put_object(
                        self.bucket,
                        self.key(job_id),
                        io.BytesIO(whole),
                        len(whole),
                        content_type="application/x-ndjson",
                    )
            except LogStoreError as exc:
                failures.append(str(exc))

        limiter = anyio.CapacityLimiter(8)

        async def bounded(job_id: str, data: bytes) -> None:
            async with limiter:
                await one(job_id, data)

        async with anyio.create_task_group() as tg:
            for job_id, data in entries.items():
                tg.start_soon(bounded, job_id, data)
        if failures:
            raise LogStoreError(
                f"{len(failures)} of {len(entries)} logs not written: {failures[0]}"
            )

    async def read(self, job_id: str) -> bytes | None:
        async with self._call(f"read the log of {job_id}"):
            try:
                response = await self.client.get_object(self.bucket, self.key(job_id))
            except Exception as exc:
                if _missing(exc):
                    return None
                raise
            try:
                data: bytes = await response.read()
            finally:
                response.close()
            return data

    async def size(self, job_id: str) -> int:
        async with self._call(f"stat the log of {job_id}"):
            try:
                stat = await self.client.stat_object(self.bucket, self.key(job_id))
            except Exception as exc:
                if _missing(exc):
                    return 0
                raise
            return int(stat.size or 0)

    async def delete(self, job_ids: Sequence[str]) -> None:
        from miniopy_async.deleteobjects import DeleteObject

        if not job_ids:
            return
        async with self._call("delete job logs"):
            errors = await self.client.remove_objects(
                self.bucket, [DeleteObject(self.key(j)) for j in job_ids]
            )
            failed = list(errors) if isinstance(errors, list) else [e async for e in errors]
            if failed:
                raise LogStoreError(f"S3 refused to delete {len(failed)} logs: {failed[0]}")

    async def link(self, job_id: str) -> str | None:
        async with self._call("sign a link"):
            url: str = await self.client.presigned_get_object(
                self.bucket, self.key(job_id), expires=LINK_EXPIRY
            )
            return url

    @asynccontextmanager
    async def _call(self, what: str) -> AsyncIterator[None]:
        try:
            with anyio.fail_after(self.timeout):
                yield
        except LogStoreError:
            raise
        except TimeoutError as exc:
            raise LogStoreError(f"S3 did not answer in {self.timeout} s ({what})") from exc
        except Exception as exc:  # aiohttp, S3Error, OSError: the store failed, not the job
            raise LogStoreError(f"cannot {what} in S3: {type(exc).__name__}: {exc}") from exc


def _missing(exc: Exception) -> bool:
    return getattr(exc, "code", None) in ("NoSuchKey", "NoSuchObject", "ResourceNotFound")


@asynccontextmanager
async def open_s3_logs(url: str, *, timeout: float = 10.0) -> AsyncIterator[S3LogStore]:
    """The store on ``url``'s bucket (created if missing), its HTTP session closed after."""
    import aiohttp
    from miniopy_async.api import Minio

    target = parse_s3_url(url)
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout, connect=min(3.0, timeout))
    )
    client = Minio(
        target.endpoint,
        access_key=target.access_key,
        secret_key=target.secret_key,
        secure=target.secure,
        region=target.region or "us-east-1",
        session=session,
    )
    store = S3LogStore(client, target.bucket, timeout=timeout)
    try:
        try:
            await store.ensure_bucket()
        except LogStoreError as exc:  # S3 down at start: the shipper spools until it returns
            from taskflow.log import get_logger

            get_logger("taskflow.s3").warning("s3_unavailable_at_start", error=str(exc))
        yield store
    finally:
        await session.close()
