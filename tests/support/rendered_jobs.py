"""A CronJob's container, as the program renders it, run here as a local process.

A Job's pod is, for its command, an argv, an environment and the volumes mounted into it.
This turns the rendered manifest (from the real program under mocks) into exactly that: every
volume becomes a local directory (a ConfigMap: the directory holding its files; a Secret: its
items written as files from the data the test gives; an emptyDir: a new directory), every
mount path in the argv and the environment is rewritten to its directory, and the image's
paths (its Python) are swapped for this machine's. So an integration test runs the command
the cluster would run, with the environment the pod would get, not a copy typed by hand.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_EXPANSION = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@dataclass(frozen=True)
class LocalJob:
    argv: list[str]
    env: dict[str, str]
    volumes: dict[str, Path]  # volume name -> its directory here

    def start(self) -> subprocess.Popen[str]:
        """Started in a process group of its own (the pod's), stopped by its PID."""
        return subprocess.Popen(self.argv, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)


def cron_job_container(cron_job: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the pod spec, its one container) of a rendered CronJob."""
    pod: dict[str, Any] = cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def local_job(cron_job: Mapping[str, Any], base: Path, *,
              config_maps: Mapping[str, Path], secrets: Mapping[str, Mapping[str, str]],
              replace: Mapping[str, str], env: Mapping[str, str]) -> LocalJob:
    """The CronJob's container as a local command. ``config_maps``: ConfigMap name -> the
    directory of its files; ``secrets``: Secret name -> its data (key -> text); ``replace``:
    whole argv words or environment values that are paths inside the image (its Python) or
    addresses inside the cluster (etcd's Service), by what stands for them here; ``env``:
    added last (the image's PATH, this test's store address)."""
    pod, container = cron_job_container(cron_job)
    volumes: dict[str, Path] = {}
    for volume in pod["volumes"]:
        directory = base / volume["name"]
        if "configMap" in volume:
            volumes[volume["name"]] = config_maps[volume["configMap"]["name"]]
            continue
        directory.mkdir(parents=True)
        if "secret" in volume:
            data = secrets[volume["secret"]["secretName"]]
            for item in volume["secret"]["items"]:
                path = directory / item["path"]
                path.write_text(data[item["key"]])
                path.chmod(int(volume["secret"].get("defaultMode", 0o644)) & 0o777)
        elif "emptyDir" not in volume:
            raise ValueError(f"volume {volume['name']!r}: only configMap, secret and emptyDir "
                             "volumes are laid out here")
        volumes[volume["name"]] = directory
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}

    def local(text: str) -> str:
        if text in replace:
            return replace[text]
        for path in sorted(mounts, key=len, reverse=True):
            if text == path or text.startswith(f"{path}/"):
                return f"{mounts[path]}{text[len(path):]}"
        return text

    rendered: dict[str, str] = {}
    for variable in container.get("env", []):
        if "value" not in variable:
            raise ValueError(f"{variable['name']}: only plain values are laid out here")
        rendered[variable["name"]] = local(variable["value"])
    environment = {**os.environ, **rendered, **env}
    # Kubernetes expands $(VAR) in the command from the container's environment.
    argv = [_EXPANSION.sub(lambda m: environment.get(m.group(1), m.group(0)), local(word))
            for word in container["command"]]
    return LocalJob(argv, environment, volumes)
