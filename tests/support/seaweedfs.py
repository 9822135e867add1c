"""A real S3-compatible server for the backup tests: SeaweedFS's ``weed server -s3``.

``weed`` is built from its Go module by tools/seaweedfs/build.sh (scripts/build-tools.sh) and
found through :mod:`tests.support.tools`. ``weed server`` rather than ``weed mini``: mini also
starts an admin UI, WebDAV, Iceberg and Lance endpoints and workers, each on a port of its
own, none of which a backup touches. Every port is chosen free and given explicitly (weed
otherwise derives gRPC ports as HTTP + 10000, which may be taken), every listener is bound to
127.0.0.1, and telemetry is off: the default would report to a public host.

Credentials are one identity in an ``-s3.config`` file, and the tests hand the backup path
only files holding the keys (``access_key_file``/``secret_key_file``), as the pods get them.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.procs import LOCALHOST, ManagedProcess, free_ports, wait_until
from tests.support.tools import tool


class SeaweedS3:
    """One ``weed server -s3`` (master, volume, filer and S3 gateway in one process)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        (self.master, self.master_grpc, self.volume, self.volume_grpc, self.filer,
         self.filer_grpc, self.s3, self.s3_grpc) = free_ports(8)
        self.access_key = "backup-" + secrets.token_hex(4)
        self.secret_key = secrets.token_urlsafe(24)
        keys = base / "keys"
        keys.mkdir(mode=0o700, exist_ok=True)
        self.access_key_file = keys / "access-key"
        self.secret_key_file = keys / "secret-key"
        self.access_key_file.write_text(self.access_key + "\n")
        self.secret_key_file.write_text(self.secret_key + "\n")
        self.config_file = keys / "s3.json"
        self.config_file.write_text(json.dumps({"identities": [{
            "name": "backup",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        for path in (self.access_key_file, self.secret_key_file, self.config_file):
            path.chmod(0o600)
        argv = [str(tool("weed")), "server", f"-dir={self.data}", f"-ip={LOCALHOST}",
                f"-ip.bind={LOCALHOST}", "-master.telemetry=false",
                f"-master.port={self.master}", f"-master.port.grpc={self.master_grpc}",
                f"-volume.port={self.volume}", f"-volume.port.grpc={self.volume_grpc}",
                "-volume.max=0", "-master.volumeSizeLimitMB=256",
                # The volume server's default 10 s of goodbye heartbeats serve a cluster
                # of many; a test server has no one to tell.
                "-volume.preStopSeconds=0",
                "-filer", f"-filer.port={self.filer}", f"-filer.port.grpc={self.filer_grpc}",
                "-s3", f"-s3.port={self.s3}", f"-s3.port.grpc={self.s3_grpc}",
                "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={self.config_file}"]
        self.process = ManagedProcess("weed", argv, log_dir=base, cwd=base)

    @property
    def endpoint(self) -> str:
        return f"http://{LOCALHOST}:{self.s3}"

    def _s3_answers(self) -> bool:
        if not self.process.running():
            raise RuntimeError(f"weed exited:\n{self.process.log_tail()}")
        try:
            urllib.request.urlopen(f"{self.endpoint}/", timeout=1)  # noqa: S310 - loopback
        except urllib.error.HTTPError as error:
            # An unsigned request is refused (403) once the gateway is up and has its config.
            return error.code in (403, 400)
        return True

    def start(self, timeout: float = 120) -> SeaweedS3:
        self.process.start()
        wait_until(self._s3_answers, timeout=timeout, what="weed's S3 gateway to answer")
        return self

    def stop(self) -> None:
        self.process.stop(timeout=30)

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """What the backup path reads: settings by value, keys by file path only."""
        return {"S3_ENDPOINT": self.endpoint, "S3_BUCKET": bucket, "S3_PREFIX": prefix,
                "S3_REGION": "us-east-1", "S3_PATH_STYLE": "true",
                "S3_ACCESS_KEY_FILE": str(self.access_key_file),
                "S3_SECRET_KEY_FILE": str(self.secret_key_file)}
