"""The cluster's passwords as the pods see them: Secret keys, files, variables, and who mounts what.

Why files and not environment variables: an environment variable is inherited by every
child process (the backup tool, the listener, each probe), is printed by ``env`` and by
crash reports, and sits in the pod spec where anyone who can read the StatefulSet's pods
sees which Secret backs it. A Secret *volume* is a tmpfs the kubelet fills; a process
reads it only when it asks to, and a container that does not mount it cannot read it at
all. So the cluster Secret is mounted read-only at :data:`CREDENTIALS_DIR`, and every
container gets only ``<NAME>_FILE`` paths (never a password) in its environment. The
scripts read each file once, through ``read_secret`` in ``scripts/lib.sh``, which fails on a
missing or empty file and keeps the value out of the environment of everything it runs.

Why per-container key lists: least privilege costs nothing here. ``init-config`` and
``clone`` need no password and mount none; the ``backup`` sidecar, the one container that
serves a port to peers, gets only what configuring replication and running the backup
tool take (root, replication, backup), never the admin or monitor passwords.

Why a module of its own, free of Pulumi imports: the StatefulSet (``cluster.py``) and the
harness that runs the pods as local processes (``tests/support/pods.py``, also used by
the benchmarks) must agree on every name here, and the harness should not have to import
pulumi_kubernetes to learn them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

# Where the Secret volume is mounted. Docker's convention for secret files; a real
# directory in both images (no /var/run symlink to resolve).
CREDENTIALS_DIR = "/run/secrets/mysql-cluster"

# Owner root, group = the pod's fsGroup (999, the images' mysql group), nothing for
# others. Under an fsGroup the kubelet ORs 0440 into every file of a read-only volume
# anyway, so 0400 would land as 0440 too; asking for what actually lands keeps the spec
# honest.
FILE_MODE = 0o440

# The variable each password is read into (from the file named by ``<variable>_FILE``),
# by account. The Secret key and the file name are both ``<account>-password``.
PASSWORD_VARIABLES: Mapping[str, str] = {
    "root": "ROOT_PASSWORD",
    "admin": "ADMIN_PASSWORD",
    "replication": "REPLICATION_PASSWORD",
    "monitor": "MONITOR_PASSWORD",
    "backup": "BACKUP_PASSWORD",
    # The account ReplicationInit moves the primary with (read_only, KILL, replication).
    "topology": "TOPOLOGY_PASSWORD",
    # The mysqld_exporter sidecar's account (socket only, metrics.enabled).
    "exporter": "EXPORTER_PASSWORD",
}

# The passwords each container reads (CONTRACT.md, Credentials); a container not listed
# mounts no credentials at all.
#   mysql:  the image entrypoint (root), bootstrap-users.sh (every account), probe.sh (monitor)
#           (no pod script uses the topology password after creating the account)
#   backup: backup-server.sh (root and replication to configure replication, backup to
#           run the backup tool); `probe.sh backup` reads none
#   exporter-config: exporter-config.sh writes the exporter's option file (metrics.enabled)
#   tls-reload: tls-reload.sh watch reloads the certificate as root (mysql.tls.enabled)
CONTAINER_PASSWORDS: Mapping[str, tuple[str, ...]] = {
    "mysql": ("root", "admin", "replication", "monitor", "backup", "topology", "exporter"),
    "backup": ("root", "replication", "backup"),
    "exporter-config": ("exporter",),
    "tls-reload": ("root",),
}
# Containers that exist only when a feature is on: their credentials volumes too.
OPTIONAL_CONTAINERS: Mapping[str, str] = {"exporter-config": "metrics",
                                          "tls-reload": "tls"}


def secret_key(account: str) -> str:
    """The cluster Secret's key for ``account``, which is also its file name in the volume."""
    if account not in PASSWORD_VARIABLES:
        raise KeyError(f"unknown account {account!r}; known: {', '.join(PASSWORD_VARIABLES)}")
    return f"{account}-password"


def file_variable(account: str) -> str:
    """The environment variable naming ``account``'s password file, e.g. ``ROOT_PASSWORD_FILE``."""
    secret_key(account)  # validates the name
    return f"{PASSWORD_VARIABLES[account]}_FILE"


def file_variables(directory: str) -> dict[str, str]:
    """Every ``<NAME>_FILE`` variable, pointing into ``directory``: identical in every
    container (the contract's environment is uniform); only the mounts differ."""
    return {file_variable(account): f"{directory}/{secret_key(account)}"
            for account in PASSWORD_VARIABLES}


class SecretKeyProblems(ValueError):
    """A user-managed Secret (``mysql.credentials.existingSecret``) that the pods could not
    use; ``problems`` names every key that is wrong, not just the first."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def passwords_from_secret_data(data: Mapping[str, str] | None) -> dict[str, str]:
    """Every account's password from a Secret's ``data`` (base64, as the API serves it).

    Trailing newlines are dropped, as ``read_secret`` in ``scripts/lib.sh`` drops them (a
    Secret made with ``kubectl create secret --from-file`` usually ends in one), so the
    pods and ReplicationInit use the same password. Refused, each one named: a missing
    key, an empty value, a value that is not base64 of UTF-8 text, a line break inside
    (option files and SQL would see two lines) and a NUL byte.
    """
    problems: list[str] = []
    passwords: dict[str, str] = {}
    for account in PASSWORD_VARIABLES:
        key = secret_key(account)
        encoded = (data or {}).get(key)
        if encoded is None:
            problems.append(f"key {key!r} is missing")
            continue
        try:
            value = base64.b64decode(encoded, validate=True).decode("utf-8").rstrip("\n")
        except (binascii.Error, UnicodeDecodeError):
            problems.append(f"key {key!r} is not UTF-8 text")
            continue
        if not value:
            problems.append(f"key {key!r} is empty")
        elif "\n" in value or "\r" in value or "\0" in value:
            problems.append(f"key {key!r} holds a line break or a NUL byte")
        else:
            passwords[account] = value
    if problems:
        raise SecretKeyProblems(problems)
    return passwords
