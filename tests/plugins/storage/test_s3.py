"""The ``s3_recordings`` plugin, called through a real plugin manager, against moto's S3
server on 127.0.0.1: a real HTTP server speaking the S3 protocol, reached by boto3 exactly
as a production store is."""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

import plugins.storage
from plugins.storage.s3 import RecordingStoreError, S3RecordingStore
from runtime import CallRecord, MissingExtra
from runtime.registry import Registry

REPO = Path(__file__).resolve().parents[3]
BUCKET = "call-recordings"
STARTED = dt.datetime(2026, 3, 14, 23, 30, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    threads_before = set(threading.enumerate())
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        # stop() ends serve_forever but leaves the listening socket open
        assert server._server is not None
        server._server.server_close()
        deadline = time.monotonic() + 5  # request threads end once their client hangs up
        while set(threading.enumerate()) - threads_before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert set(threading.enumerate()) <= threads_before


@pytest.fixture
def s3_env(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The environment a deployment sets, pointed at an empty moto; nothing from the
    developer's own AWS setup leaks in."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"))
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_MAX_ATTEMPTS",
        "DIALPLAN_RECORDINGS_S3_PREFIX",
        "DIALPLAN_RECORDINGS_KEEP_LOCAL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_url)
    monkeypatch.setenv("DIALPLAN_RECORDINGS_S3_BUCKET", BUCKET)
    return moto_url


@pytest.fixture
def s3(s3_env: str) -> Iterator[Any]:
    """A boto3 client of the test's own, to create buckets and read what was stored."""
    client = boto3.session.Session().client("s3")
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def bucket(s3: Any) -> str:
    s3.create_bucket(Bucket=BUCKET)
    return BUCKET


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    """A stereo 16-bit WAV, as the server's recorder writes it."""
    path = tmp_path / "recordings" / "call.wav"
    path.parent.mkdir()
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(bytes(range(256)) * 250)
    return path


def call_record(**changes: Any) -> CallRecord:
    fields: dict[str, Any] = {
        "session_id": uuid.uuid4().hex,
        "bot_id": "dental",
        "bot_version": "3f9a2c",
        "transport": "twilio",
        "started_at": STARTED,
    }
    return CallRecord(**(fields | changes))


async def store(registry: Registry, record: CallRecord, path: Path) -> Any:
    """What the server gets back from the hook, awaited when it is an awaitable."""
    stored = registry.hook.store_recording(record=record, path=str(path))
    return await stored if stored is not None else None


async def test_uploads_the_wav_and_deletes_the_local_copy(
    registry: Registry, s3: Any, bucket: str, recording: Path
) -> None:
    record = call_record()
    wav = recording.read_bytes()

    key = await store(registry, record, recording)

    object_key = f"recordings/dental/2026-03-14/{record.session_id}.wav"
    assert key == f"s3://{bucket}/{object_key}"
    stored = s3.get_object(Bucket=bucket, Key=object_key)
    assert stored["Body"].read() == wav
    assert stored["ContentType"] == "audio/wav"
    assert stored["Metadata"] == {
        "session-id": record.session_id,
        "bot-id": "dental",
        "bot-version": "3f9a2c",
    }
    assert not recording.exists()


async def test_keep_local_and_a_prefix_without_its_slash(
    registry: Registry,
    s3: Any,
    bucket: str,
    recording: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DIALPLAN_RECORDINGS_KEEP_LOCAL", "true")
    monkeypatch.setenv("DIALPLAN_RECORDINGS_S3_PREFIX", "prod/calls")
    record = call_record()

    key = await store(registry, record, recording)

    object_key = f"prod/calls/dental/2026-03-14/{record.session_id}.wav"
    assert key == f"s3://{bucket}/{object_key}"
    assert s3.get_object(Bucket=bucket, Key=object_key)["Body"].read() == recording.read_bytes()


async def test_without_a_bucket_the_plugin_passes(
    registry: Registry, recording: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DIALPLAN_RECORDINGS_S3_BUCKET", raising=False)

    assert registry.hook.store_recording(record=call_record(), path=str(recording)) is None
    assert recording.exists()


async def test_a_missing_bucket_keeps_the_file(
    registry: Registry, s3_env: str, recording: Path
) -> None:
    with pytest.raises(RecordingStoreError) as error:
        await store(registry, call_record(), recording)

    message = str(error.value)
    assert f"s3://{BUCKET}/recordings/dental/2026-03-14/" in message
    assert f"(endpoint {s3_env})" in message
    assert f"bucket '{BUCKET}' does not exist" in message
    assert "create it, or set DIALPLAN_RECORDINGS_S3_BUCKET to an existing bucket" in message
    assert message.endswith(f"the recording stays at {recording}")
    assert recording.exists()


async def test_an_unreachable_endpoint_fails_fast_and_keeps_the_file(
    registry: Registry, s3_env: str, recording: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a port nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", closed)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")

    started = time.monotonic()
    with pytest.raises(RecordingStoreError) as error:
        await store(registry, call_record(), recording)

    assert time.monotonic() - started < 5
    message = str(error.value)
    assert f"(endpoint {closed}): cannot reach the store: " in message
    assert "check AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL and that the store is up" in message
    assert recording.exists()


async def test_missing_credentials_say_which_variables(
    registry: Registry, bucket: str, recording: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")

    with pytest.raises(RecordingStoreError) as error:
        await store(registry, call_record(), recording)

    message = str(error.value)
    assert "no usable AWS credentials" in message
    assert "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE" in message
    assert recording.exists()


async def test_without_boto3_the_error_says_how_to_install_it(
    registry: Registry, s3_env: str, recording: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as if boto3 were not installed: importing it raises ModuleNotFoundError
    monkeypatch.setitem(sys.modules, "boto3", None)
    monkeypatch.delitem(sys.modules, "plugins.storage.s3_upload", raising=False)
    monkeypatch.delattr(plugins.storage, "s3_upload", raising=False)

    with pytest.raises(MissingExtra) as error:
        await store(registry, call_record(), recording)

    message = str(error.value)
    assert f"DIALPLAN_RECORDINGS_S3_BUCKET={BUCKET}" in message
    assert "pip install 'dialplan[s3]'" in message
    assert recording.exists()


def test_keep_local_must_be_yes_or_no() -> None:
    environ = {"DIALPLAN_RECORDINGS_S3_BUCKET": BUCKET, "DIALPLAN_RECORDINGS_KEEP_LOCAL": "ja"}

    with pytest.raises(RecordingStoreError, match="DIALPLAN_RECORDINGS_KEEP_LOCAL='ja' is not"):
        S3RecordingStore.from_environ(environ)


def test_the_key_is_dated_by_the_utc_day_the_call_started() -> None:
    store = S3RecordingStore(bucket=BUCKET, prefix="")
    india = dt.timezone(dt.timedelta(hours=5, minutes=30))

    zoned = call_record(session_id="abc", started_at=dt.datetime(2026, 3, 15, 2, 0, tzinfo=india))
    naive = call_record(session_id="abc", started_at=dt.datetime(2026, 3, 15, 2, 0))

    assert store.key(zoned) == "dental/2026-03-14/abc.wav"
    assert store.key(naive) == "dental/2026-03-15/abc.wav"


def test_loading_the_plugin_does_not_import_boto3() -> None:
    probe = "import sys, plugins.storage.s3; print(json.dumps(sorted(sys.modules)))"
    run = subprocess.run(
        [sys.executable, "-c", f"import json; {probe}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    imported = json.loads(run.stdout)
    assert not [name for name in imported if name.split(".")[0] in {"boto3", "botocore"}]
