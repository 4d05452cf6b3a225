"""The ``s3_recordings`` plugin: upload each call's recording to S3 or an S3-compatible
store (MinIO, R2, ...). The hook has no bot-level configuration, so the environment
configures it:

    DIALPLAN_RECORDINGS_S3_BUCKET    the bucket; unset, the plugin passes and the WAV stays
                                     in the server's recordings directory
    DIALPLAN_RECORDINGS_S3_PREFIX    key prefix, default "recordings/"
    DIALPLAN_RECORDINGS_KEEP_LOCAL   "true" keeps the local WAV after a verified upload

boto3 reads everything else itself: the endpoint of an S3-compatible store from
``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL``), credentials from its usual chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an instance role),
retries from ``AWS_MAX_ATTEMPTS``.

The hook returns a coroutine; awaiting it uploads in a worker thread, so the event loop
that carries live audio never waits on S3. boto3 is imported in that thread, on the first
upload (`plugins.storage.s3_upload`), so loading plugins stays cheap.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from runtime import CallRecord, DialplanError, MissingExtra, hookimpl

BUCKET_ENV = "DIALPLAN_RECORDINGS_S3_BUCKET"
PREFIX_ENV = "DIALPLAN_RECORDINGS_S3_PREFIX"
KEEP_LOCAL_ENV = "DIALPLAN_RECORDINGS_KEEP_LOCAL"
DEFAULT_PREFIX = "recordings/"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


class RecordingStoreError(DialplanError):
    """A recording could not be stored; the local file is kept, and the message says where
    it is, what went wrong and how to fix it."""


@dataclass(frozen=True)
class S3RecordingStore:
    """Where recordings go, as the environment says when a call ends."""

    bucket: str
    prefix: str = DEFAULT_PREFIX
    keep_local: bool = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> S3RecordingStore | None:
        """The configured store, or None when no bucket is set."""
        env = os.environ if environ is None else environ
        bucket = env.get(BUCKET_ENV, "").strip()
        if not bucket:
            return None
        prefix = env.get(PREFIX_ENV, DEFAULT_PREFIX).strip().strip("/")
        keep_local = env.get(KEEP_LOCAL_ENV, "").strip().lower()
        if keep_local not in _TRUE | _FALSE:
            raise RecordingStoreError(
                f"{KEEP_LOCAL_ENV}={env[KEEP_LOCAL_ENV]!r} is not a yes/no value "
                "(set it to true or false)"
            )
        return cls(
            bucket=bucket, prefix=f"{prefix}/" if prefix else "", keep_local=keep_local in _TRUE
        )

    def key(self, record: CallRecord) -> str:
        """``<prefix><bot_id>/<YYYY-MM-DD>/<session_id>.wav``, dated by the call's start
        (in UTC when the time carries a zone, so every server files a call the same day)."""
        started = record.started_at
        if started.tzinfo is not None:
            started = started.astimezone(dt.timezone.utc)
        return f"{self.prefix}{record.bot_id}/{started:%Y-%m-%d}/{record.session_id}.wav"

    async def store(self, record: CallRecord, path: str) -> str:
        """Upload ``path`` and return ``s3://<bucket>/<key>``."""
        return await asyncio.to_thread(self._store_in_thread, record, path)

    def _store_in_thread(self, record: CallRecord, path: str) -> str:
        try:
            from plugins.storage import s3_upload
        except ImportError as exc:
            if not (exc.name or "").startswith(("boto3", "botocore")):
                raise
            error = MissingExtra("s3_recordings", "boto3", "s3")
            # `pip` is often not the environment's pip (uv environments have none)
            error.args = (
                f"recording store 's3_recordings' ({BUCKET_ENV}={self.bucket}) needs the "
                "'boto3' package: pip install 'dialplan[s3]' (with uv: `uv add 'dialplan[s3]'`)"
                f", or unset {BUCKET_ENV} to keep recordings on local disk; the recording "
                f"stays at {path}",
            )
            raise error from exc
        return s3_upload.upload_recording(self, record, path)


@hookimpl(trylast=True)  # a store plugin of your own goes first
def store_recording(record: CallRecord, path: str) -> Coroutine[Any, Any, str] | None:
    store = S3RecordingStore.from_environ()
    if store is None:
        return None
    return store.store(record, path)
