"""Uploading one recording with boto3. Imported on a worker thread by the first upload, so
neither loading plugins nor the event loop ever waits for boto3.

The upload is one ``PutObject`` carrying the file's MD5 (``Content-MD5``): the store
checks the bytes it received against it before it answers, on AWS and on every
S3-compatible store, and needs no read permission to do so. Only after that answer is the
local file deleted; on any failure it stays where the server wrote it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from plugins.storage.s3 import BUCKET_ENV, PREFIX_ENV, RecordingStoreError, S3RecordingStore
from runtime import CallRecord

log = logging.getLogger(__name__)

CONTENT_TYPE = "audio/wav"
ENDPOINT_ENVS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
CREDENTIALS_FIX = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an "
    "instance or task role"
)
_CHUNK = 1024 * 1024


def upload_recording(store: S3RecordingStore, record: CallRecord, path: str) -> str:
    """Upload the WAV at ``path``, delete it unless ``store.keep_local``; ``s3://bucket/key``."""
    local = Path(path)
    key = store.key(record)
    where = f"s3://{store.bucket}/{key}"
    endpoint = _configured_endpoint()
    try:
        checksum = _md5(local)
        client = _client()
        endpoint = client.meta.endpoint_url
        try:
            with local.open("rb") as body:
                client.put_object(
                    Bucket=store.bucket,
                    Key=key,
                    Body=body,
                    ContentMD5=checksum,
                    ContentType=CONTENT_TYPE,
                    Metadata={
                        "session-id": record.session_id,
                        "bot-id": record.bot_id,
                        "bot-version": record.bot_version,
                    },
                )
        finally:
            client.close()
    except (OSError, ValueError, BotoCoreError, ClientError) as exc:
        cause, fix = _explain(exc, store)
        kept = f"; the recording stays at {path}" if local.exists() else ""
        raise RecordingStoreError(
            f"could not upload recording {path} to {where} (endpoint {endpoint}): {cause} "
            f"({fix}){kept}"
        ) from exc
    if not store.keep_local:
        try:
            local.unlink()
        except OSError as exc:  # stored all the same; a leftover file is only disk space
            log.warning("uploaded %s to %s but could not delete it: %s", path, where, exc)
    return where


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return base64.b64encode(digest.digest()).decode("ascii")


# A boto3 Session takes ~90 ms to load the S3 model, a client from a loaded one ~5 ms, so
# the session is kept. Sessions are not thread-safe (clients are): clients are made under
# the lock. A session reads its configuration once, so a changed AWS_* environment (a
# test, a rotated key) gets a new one.
_session_lock = threading.Lock()
_session: tuple[tuple[tuple[str, str], ...], Any] | None = None


def _client() -> Any:
    global _session
    aws_environ = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    with _session_lock:
        if _session is None or _session[0] != aws_environ:
            _session = (aws_environ, boto3.session.Session())
        return _session[1].client("s3")


def _configured_endpoint() -> str:
    for name in ENDPOINT_ENVS:
        if os.environ.get(name):
            return os.environ[name]
    return "AWS's default"


def _explain(exc: BaseException, store: S3RecordingStore) -> tuple[str, str]:
    """(what went wrong, how to fix it) for an upload failure."""
    if isinstance(exc, FileNotFoundError):
        return "the file does not exist", "was it moved or deleted before the upload?"
    if isinstance(exc, OSError):
        return f"cannot read the file: {exc}", "check the recordings directory"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return f"no usable AWS credentials: {exc}", CREDENTIALS_FIX
    if isinstance(exc, ConnectionError | HTTPClientError):
        return (
            f"cannot reach the store: {exc}",
            f"check {' or '.join(ENDPOINT_ENVS)} and that the store is up; "
            "AWS_MAX_ATTEMPTS sets how often boto3 tries",
        )
    if isinstance(exc, ValueError):  # boto3 rejects a malformed endpoint URL this way
        return str(exc), f"check {' and '.join(ENDPOINT_ENVS)}"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        said = f"the store answered {code or status}: {error.get('Message') or exc}"
        if code == "NoSuchBucket":
            return (
                f"bucket {store.bucket!r} does not exist",
                f"create it, or set {BUCKET_ENV} to an existing bucket",
            )
        if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch"}:
            return said, f"the credentials are wrong: {CREDENTIALS_FIX}"
        if code == "AccessDenied" or status == 403:
            return said, (
                f"the credentials need s3:PutObject on arn:aws:s3:::{store.bucket}/"
                f"{store.prefix}* (the prefix is {PREFIX_ENV})"
            )
        if code in {"BadDigest", "InvalidDigest"}:
            return said, "the bytes changed on the way to the store; upload the file again"
        return said, "see the store's error above"
    return f"{type(exc).__name__}: {exc}", "see the error above"
