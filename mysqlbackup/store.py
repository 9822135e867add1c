"""The object store (any S3-compatible server) as the backup path sees it.

Why a wrapper over boto3 rather than boto3 calls scattered through the commands:

- Credentials come only from files (the Secret mounted as a volume), never from argv or the
  environment: boto3's own credential chain would happily pick up ``AWS_*`` variables or
  ``~/.aws``, so the client is built with explicit keys read here and nothing else.
- Uploads are streamed: a backup is never staged on disk. ``upload_stream`` reads a pipe in
  fixed parts, hashes every byte on the way and completes the multipart upload only at a
  clean end of input; any failure aborts it, so a half-written object never becomes visible
  (a SIGKILLed uploader leaves an unfinished multipart upload, which is invisible to readers).
- Downloads verify: ``download_stream`` hashes what it hands on and fails naming the object
  when the sum differs from the one recorded, so a corrupted object never restores silently.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import boto3
import botocore.config
import botocore.exceptions

# 5 MiB is S3's minimum part; larger parts mean fewer requests on a fast link.
PART_SIZE = 16 * 1024 * 1024
CHUNK = 1024 * 1024


class StoreError(Exception):
    """The store refused, could not be reached, or holds something other than promised."""


class ChecksumError(StoreError):
    """An object's bytes do not hash to the sha256 its manifest or record promises."""


@dataclass(frozen=True)
class StoreConfig:
    endpoint: str
    bucket: str
    prefix: str = ""
    region: str = "us-east-1"
    path_style: bool = True
    access_key_file: str = ""
    secret_key_file: str = ""

    @staticmethod
    def from_env(env: dict[str, str] | None = None) -> StoreConfig:
        """Reads the non-secret settings from ``S3_*`` variables; keys are file paths only.

        Fails naming every problem at once, before anything is contacted.
        """
        source = dict(os.environ if env is None else env)
        problems = [f"{name} is unset or empty" for name in
                    ("S3_ENDPOINT", "S3_BUCKET", "S3_ACCESS_KEY_FILE", "S3_SECRET_KEY_FILE")
                    if not source.get(name)]
        problems += [f"{name} is set: the store's keys are read only from the files that "
                     f"S3_ACCESS_KEY_FILE and S3_SECRET_KEY_FILE name" for name in
                     ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if source.get(name)]
        if problems:
            raise StoreError("object store settings: " + "; ".join(problems))
        prefix = source.get("S3_PREFIX", "").strip("/")
        return StoreConfig(
            endpoint=source["S3_ENDPOINT"], bucket=source["S3_BUCKET"], prefix=prefix,
            region=source.get("S3_REGION") or "us-east-1",
            path_style=source.get("S3_PATH_STYLE", "true").lower() != "false",
            access_key_file=source["S3_ACCESS_KEY_FILE"],
            secret_key_file=source["S3_SECRET_KEY_FILE"])


def _read_key(variable: str, path: str) -> str:
    try:
        value = Path(path).read_text().strip()
    except OSError as error:
        raise StoreError(f"{variable}: cannot read {path}: {error.strerror}") from None
    if not value:
        raise StoreError(f"{variable}: {path} is empty; a store key is never empty")
    return value


class Store:
    """One bucket and prefix. Keys passed in are relative to the prefix."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        access = _read_key("S3_ACCESS_KEY_FILE", config.access_key_file)
        secret = _read_key("S3_SECRET_KEY_FILE", config.secret_key_file)
        addressing = "path" if config.path_style else "virtual"
        self._client: Any = boto3.session.Session().client(
            "s3", endpoint_url=config.endpoint, region_name=config.region,
            aws_access_key_id=access, aws_secret_access_key=secret,
            config=botocore.config.Config(
                s3={"addressing_style": addressing}, retries={"max_attempts": 3},
                connect_timeout=5, read_timeout=60,
                # Checksums of our own are what matter; the SDK's trailing CRCs are not
                # understood by every S3-compatible server.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required"))

    def key(self, relative: str) -> str:
        return f"{self.config.prefix}/{relative}" if self.config.prefix else relative

    def relative(self, key: str) -> str:
        prefix = f"{self.config.prefix}/" if self.config.prefix else ""
        return key[len(prefix):]

    def _call(self, what: str, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, method)(Bucket=self.config.bucket, **kwargs)
        except botocore.exceptions.EndpointConnectionError:
            raise StoreError(f"{what}: endpoint {self.config.endpoint} is unreachable") from None
        except botocore.exceptions.ClientError as error:
            code = error.response.get("Error", {}).get("Code", "?")
            # HEAD answers carry no body, so a missing bucket is a bare 404 there.
            if code == "NoSuchBucket" or (method == "head_bucket" and code == "404"):
                raise StoreError(f"{what}: bucket {self.config.bucket!r} does not exist at "
                                 f"{self.config.endpoint}") from None
            if code in ("403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
                raise StoreError(f"{what}: the store refused these keys ({code}); check the "
                                 "files S3_ACCESS_KEY_FILE and S3_SECRET_KEY_FILE name") from None
            raise StoreError(f"{what}: {code}: {error}") from None

    def check(self) -> None:
        """The bucket exists and answers with these keys (bad input fails here, early)."""
        self._call("checking the bucket", "head_bucket")

    def create_bucket(self) -> None:
        self._call("creating the bucket", "create_bucket")

    def upload_stream(self, relative: str, reader: IO[bytes]) -> tuple[int, str]:
        """Multipart-uploads everything ``reader`` yields; returns (size, sha256 hex)."""
        key = self.key(relative)
        upload = self._call(f"starting upload of {key}", "create_multipart_upload", Key=key)
        upload_id = upload["UploadId"]
        digest, size = hashlib.sha256(), 0
        parts: list[dict[str, Any]] = []
        try:
            while True:
                part = _read_full(reader, PART_SIZE)
                if not part and parts:
                    break
                digest.update(part)
                size += len(part)
                number = len(parts) + 1
                answer = self._call(f"uploading part {number} of {key}", "upload_part",
                                    Key=key, UploadId=upload_id, PartNumber=number, Body=part)
                parts.append({"ETag": answer["ETag"], "PartNumber": number})
                if len(part) < PART_SIZE:
                    break
            self._call(f"completing upload of {key}", "complete_multipart_upload", Key=key,
                       UploadId=upload_id, MultipartUpload={"Parts": parts})
        except BaseException:
            # Best effort: the upload is never completed either way, so nobody can read it.
            with contextlib.suppress(Exception):
                self._client.abort_multipart_upload(Bucket=self.config.bucket, Key=key,
                                                    UploadId=upload_id)
            raise
        return size, digest.hexdigest()

    def put_bytes(self, relative: str, body: bytes) -> None:
        self._call(f"writing {self.key(relative)}", "put_object", Key=self.key(relative),
                   Body=body)

    def put_json(self, relative: str, document: dict[str, Any]) -> None:
        self.put_bytes(relative, json.dumps(document, indent=1, sort_keys=True).encode())

    def get_json(self, relative: str) -> dict[str, Any]:
        answer = self._call(f"reading {self.key(relative)}", "get_object",
                            Key=self.key(relative))
        try:
            document = json.loads(answer["Body"].read())
        except ValueError:
            raise StoreError(f"{self.key(relative)} is not JSON") from None
        if not isinstance(document, dict):
            raise StoreError(f"{self.key(relative)} is not a JSON object")
        return document

    def objects(self, relative_prefix: str) -> Iterator[tuple[str, int]]:
        """(relative key, size) of every object under ``relative_prefix``."""
        token: dict[str, str] = {}
        while True:
            answer = self._call(f"listing {self.key(relative_prefix)}", "list_objects_v2",
                                Prefix=self.key(relative_prefix), **token)
            for item in answer.get("Contents", []):
                yield self.relative(item["Key"]), int(item["Size"])
            if not answer.get("IsTruncated"):
                return
            token = {"ContinuationToken": answer["NextContinuationToken"]}

    def delete(self, relatives: list[str]) -> None:
        for start in range(0, len(relatives), 1000):
            batch = [{"Key": self.key(r)} for r in relatives[start:start + 1000]]
            self._call("deleting objects", "delete_objects", Delete={"Objects": batch})

    def download_stream(self, relative: str, writer: IO[bytes], sha256: str) -> int:
        """Copies the object to ``writer``; fails naming it when its sha256 is not ``sha256``.

        The bytes are written as they arrive (a restore pipes them straight into extraction),
        so the caller must treat what it extracted as garbage when this raises.
        """
        key = self.key(relative)
        answer = self._call(f"reading {key}", "get_object", Key=key)
        digest, size, consumer_gone = hashlib.sha256(), 0, False
        for chunk in answer["Body"].iter_chunks(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if not consumer_gone:
                try:
                    writer.write(chunk)
                except BrokenPipeError:
                    # A corrupted stream usually kills the decompressor first; read on to
                    # the end anyway, so the failure names the object, not a broken pipe.
                    consumer_gone = True
        if not consumer_gone:
            try:
                writer.flush()
            except BrokenPipeError:
                consumer_gone = True
        if digest.hexdigest() != sha256:
            raise ChecksumError(f"checksum mismatch in s3://{self.config.bucket}/{key}: "
                                f"sha256 {digest.hexdigest()} ({size} bytes), the record "
                                f"promises {sha256}")
        if consumer_gone:
            raise StoreError(f"s3://{self.config.bucket}/{key} is intact, but the program "
                             "reading it stopped early")
        return size


def _read_full(reader: IO[bytes], size: int) -> bytes:
    """Up to ``size`` bytes, short only at end of input (a pipe returns short reads)."""
    parts, remaining = [], size
    while remaining:
        chunk = reader.read(remaining)
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)
