"""The README walkthrough: ``scripts/deploy.sh e2e --yes`` with the CLI built here, a
kubeconfig and a passphrase, against the test control plane (issue 12).

The script runs unmodified from a copy of the project directory (the program, packages,
scripts and venv are symlinks to the repository's; ``Pulumi.yaml`` and the stack file are
copies, because ``stack init`` writes the stack file). The stack file is
``Pulumi.e2e.yaml`` with another namespace, so that it cannot meet test_stack.py's stack.
There is no Python language host here, so deploy.sh hands over to
scripts/pulumi_inline.py: this is the path a newcomer on such a machine takes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.controlplane import ControlPlane
from tests.support.e2e_deployment import CLI_DEADLINE
from tests.support.e2e_kube import SECRET, STORAGE_CLASS, Kubectl, make_user_secret, prepare_cluster
from tests.support.toolchain import PROJECT_LINKS, REPO_ROOT, PulumiSandbox

pytestmark = pytest.mark.e2e

NAMESPACE = "mysql-walkthrough"


def project_copy(root: Path) -> Path:
    project = root / "project"
    project.mkdir()
    for entry in (*PROJECT_LINKS, "scripts"):
        (project / entry).symlink_to(REPO_ROOT / entry)
    shutil.copyfile(REPO_ROOT / "Pulumi.yaml", project / "Pulumi.yaml")
    text = (REPO_ROOT / "Pulumi.e2e.yaml").read_text()
    assert "mysql-cluster:namespace: mysql-e2e\n" in text
    (project / "Pulumi.e2e.yaml").write_text(
        text.replace("mysql-cluster:namespace: mysql-e2e\n",
                     f"mysql-cluster:namespace: {NAMESPACE}\n"))
    return project


def test_deploy_script_ups_the_e2e_stack_with_the_built_cli(
        sandbox: PulumiSandbox, control_plane: ControlPlane) -> None:
    kubectl = Kubectl(control_plane)
    prepare_cluster(control_plane, nodes=1, volumes=4, storage_class=STORAGE_CLASS,
                    prefix="walkthrough")
    control_plane.create_namespace(NAMESPACE)
    make_user_secret(kubectl, NAMESPACE)
    project = project_copy(sandbox.root)
    env = {**os.environ, **sandbox.environment(), "HOME": str(sandbox.root),
           "KUBECONFIG": str(control_plane.kubeconfig),
           "PULUMI_BACKEND_URL": sandbox.backend_url}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        # deploy.sh starts the CLI as its child: past the deadline the whole group the
        # script leads is killed, by the script's PID, so no CLI outlives the test.
        process = subprocess.Popen(list(argv), cwd=project, env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=CLI_DEADLINE)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            raise AssertionError(f"{' '.join(argv)} outlived {CLI_DEADLINE:.0f} s:\n"
                                 f"{stdout}{stderr}") from None
        return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)

    deployed = run("bash", str(project / "scripts" / "deploy.sh"), "e2e", "--yes")
    try:
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        kubectl.wait_ready(NAMESPACE, "mysql", 2)
        kubectl.wait_ready(NAMESPACE, "etcd", 1)
        again = run("bash", str(project / "scripts" / "deploy.sh"), "e2e", "--yes",
                    "--expect-no-changes")
        assert again.returncode == 0, again.stdout + again.stderr
    finally:
        destroyed = run(str(project / "venv" / "bin" / "python"), "-m",
                        "scripts.pulumi_inline", "destroy", "e2e", "--yes")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    kubectl.wait_project_gone(NAMESPACE)
    kubectl("get", "secret", SECRET, "-n", NAMESPACE)  # the user's, untouched
    assert sandbox.trap.connections == [], "a run tried to reach the network"
