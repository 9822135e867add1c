"""The GitHub Actions workflows: linted by actionlint, and held to the delivery rules.

actionlint catches what GitHub would reject or silently misread (unknown keys, wrong
expression types, inputs a reusable workflow does not declare, shell mistakes in
``run:`` through shellcheck). It cannot know our rules, so the structural tests below
state them: every pull request previews every stack and comments the diff; a merge to
main updates dev and only then prod, behind the ``prod`` environment's approval; secrets
come from the CI's secret store; the CLI version matches the SDK pin.

Each rule is a function returning the problems it finds, and each is also run against a
deliberately broken copy of the workflows, so a rule that stopped checking would fail
here rather than pass silently.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships with kubernetes; no stubs pinned

from tests.support.procs import require_binary
from tests.support.trees import walk

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
REUSABLE_PULUMI = "./.github/workflows/pulumi.yml"
REUSABLE_TESTS = "./.github/workflows/tests.yml"
# Names that must never carry a literal value in a workflow.
_SECRET_NAME = re.compile(r"(TOKEN|PASSWORD|PASSPHRASE|SECRET|KUBECONFIG|PRIVATE_KEY|CREDENTIAL)",
                          re.IGNORECASE)
_FROM_SECRET_STORE = re.compile(r"^\$\{\{\s*secrets\.[A-Za-z_][A-Za-z0-9_]*\s*\}\}$")
# Credentials as they look when pasted into a file by mistake.
_LEAKED_CREDENTIALS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "Pulumi access token": re.compile(r"\bpul-[0-9a-f]{40}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "kubeconfig client key": re.compile(r"client-key-data:\s*[A-Za-z0-9+/=]{40,}"),
}

# The only write scopes any job gets: previews comment on pull requests, the workspace
# image build pushes to the repository's container registry.
_WRITES_ALLOWED = {("pull-request.yml", "preview"): ("pull-requests",),
                   ("workspace-image.yml", "build"): ("packages",)}

Workflow = dict[str, Any]


def _actionlint() -> str:
    """actionlint from the venv that runs the tests (pip puts it beside python), else PATH."""
    beside_python = Path(sys.executable).parent / "actionlint"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("actionlint")
    if found is None:
        require_binary("actionlint")  # skips locally, fails under CI=true
        raise AssertionError("unreachable: require_binary fails or skips")
    return found


def _run_actionlint(files: list[Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_actionlint(), "-no-color", *map(str, files)], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def _load(path: Path) -> Workflow:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), f"{path} is not a YAML mapping"
    # YAML 1.1 reads the bare key `on` as the boolean true.
    if True in document:
        document["on"] = document.pop(True)
    return document


@pytest.fixture(scope="module")
def workflows() -> dict[str, Workflow]:
    found = {p.name: _load(p) for p in sorted(WORKFLOWS.glob("*.yml"))}
    assert {"pull-request.yml", "deploy.yml", "pulumi.yml", "tests.yml"} <= set(found)
    return found


# Stack files that are no environment: e2e is what tests/e2e deploys on the test control
# plane (and the README walkthrough), never delivered.
UNDELIVERED_STACKS = {"e2e"}


def _stacks() -> set[str]:
    """The stacks the project delivers (Pulumi.<stack>.yaml), or dev and prod until it does."""
    defined = {p.name[len("Pulumi."):-len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml")}
    return (defined - UNDELIVERED_STACKS) or {"dev", "prod"}


def _jobs(workflow: Workflow) -> dict[str, dict[str, Any]]:
    jobs = workflow.get("jobs")
    assert isinstance(jobs, dict), "a workflow without jobs"
    return jobs


# ---------------------------------------------------------------------------- the rules


def _preview_problems(all_workflows: dict[str, Workflow]) -> list[str]:
    """A pull request runs the tests, then previews every stack and comments the diff."""
    problems = []
    workflow = all_workflows["pull-request.yml"]
    triggers = workflow.get("on") or {}
    if "pull_request" not in triggers:
        problems.append("pull-request.yml is not triggered by pull_request")
    jobs = _jobs(workflow)
    previews = [(name, job) for name, job in jobs.items() if job.get("uses") == REUSABLE_PULUMI
                and job.get("with", {}).get("command") == "preview"]
    if len(previews) != 1:
        return [*problems, f"expected one preview job calling {REUSABLE_PULUMI}, "
                           f"found {[n for n, _ in previews]}"]
    name, job = previews[0]
    stacks = set(job.get("strategy", {}).get("matrix", {}).get("stack", []))
    if stacks != _stacks():
        problems.append(f"preview job {name} covers stacks {sorted(stacks)}, "
                        f"the project has {sorted(_stacks())}")
    if job["with"].get("comment-on-pr") is not True:
        problems.append(f"preview job {name} does not comment the diff on the pull request")
    if job.get("needs") != "tests" or jobs.get("tests", {}).get("uses") != REUSABLE_TESTS:
        problems.append(f"preview job {name} does not wait for the test suite")
    if job.get("permissions", {}).get("pull-requests") != "write":
        problems.append(f"preview job {name} cannot write its pull-request comment")
    if str(job["with"].get("environment", "")) in {"dev", "prod"}:
        problems.append(f"preview job {name} uses a deployment environment")
    return problems


def _deploy_problems(all_workflows: dict[str, Workflow]) -> list[str]:
    """main: tests, then up dev, then up prod in the approval-protected `prod` environment."""
    problems = []
    workflow = all_workflows["deploy.yml"]
    push = (workflow.get("on") or {}).get("push") or {}
    if push.get("branches") != ["main"]:
        problems.append(f"deploy.yml runs on pushes to {push.get('branches')}, not main only")
    if set(workflow.get("on") or {}) - {"push"}:
        problems.append(f"deploy.yml has extra triggers {sorted(set(workflow['on']) - {'push'})}")
    concurrency = workflow.get("concurrency") or {}
    if not concurrency.get("group") or concurrency.get("cancel-in-progress") is not False:
        problems.append("deploy.yml must serialise deployments and never cancel one in progress")
    jobs = _jobs(workflow)
    ups = {job.get("with", {}).get("stack"): (name, job) for name, job in jobs.items()
           if job.get("uses") == REUSABLE_PULUMI and job.get("with", {}).get("command") == "up"}
    if set(ups) != {"dev", "prod"}:
        return [*problems, f"deploy.yml updates stacks {sorted(map(str, ups))}, want dev and prod"]
    dev_name, dev = ups["dev"]
    prod_name, prod = ups["prod"]
    if dev.get("needs") != "tests":
        problems.append(f"{dev_name} does not wait for the test suite")
    if prod.get("needs") != dev_name:
        problems.append(f"{prod_name} does not wait for {dev_name} (needs: {prod.get('needs')})")
    if dev["with"].get("environment") != "dev":
        problems.append(f"{dev_name} does not run in the dev environment")
    if prod["with"].get("environment") != "prod":
        problems.append(f"{prod_name} does not run in the approval-protected prod environment")
    # The reusable workflow must put its job into the environment it is given; otherwise
    # the approval gate and the environment's secrets never apply.
    pulumi_job = next(iter(_jobs(all_workflows["pulumi.yml"]).values()))
    if pulumi_job.get("environment") != "${{ inputs.environment }}":
        problems.append("pulumi.yml does not run its job in the caller's environment")
    return problems


def _secret_problems(all_workflows: dict[str, Workflow]) -> list[str]:
    """Every secret-named value comes from `${{ secrets.X }}`; no blanket secret passing."""
    problems = []
    for file, workflow in all_workflows.items():
        for path, value in walk(workflow):
            key = path.rsplit(".", 1)[-1]
            if key == "secrets" and value == "inherit":
                problems.append(f"{file}{path}: `secrets: inherit` hands every secret over")
            if isinstance(value, dict | list | bool):
                # Structure, or a flag such as `persist-credentials: false`.
                continue
            # Environment variables and action inputs (`password:`, `github-token:`).
            parent = path.rsplit(".", 2)[-2] if path.count(".") >= 2 else ""
            if parent in ("env", "with") and _SECRET_NAME.search(key) and not (
                    isinstance(value, str) and _FROM_SECRET_STORE.match(value)):
                problems.append(f"{file}{path}: {key} is not taken from the secret store")
        if (workflow.get("on") or {}).get("pull_request_target") is not None:
            problems.append(f"{file}: pull_request_target runs fork code with secrets")
    return problems


def _permission_problems(all_workflows: dict[str, Workflow]) -> list[str]:
    """Least privilege: read-only token by default, pull-request writes only for previews."""
    problems = []
    for file, workflow in all_workflows.items():
        if file in {"pulumi.yml", "tests.yml"}:
            # Called workflows inherit (and can only narrow) the caller's permissions.
            continue
        if workflow.get("permissions") != {"contents": "read"}:
            problems.append(f"{file}: top-level permissions are {workflow.get('permissions')}")
        for name, job in _jobs(workflow).items():
            granted = job.get("permissions") or {}
            writes = {scope for scope, level in granted.items() if level == "write"}
            allowed = set(_WRITES_ALLOWED.get((file, name), ()))
            if writes - allowed:
                problems.append(f"{file}: job {name} may write {sorted(writes - allowed)}")
    return problems


def _injection_problems(all_workflows: dict[str, Workflow]) -> list[str]:
    """No `${{ }}` inside `run:`: values reach scripts through env, never as shell text."""
    return [f"{file}{path}: expression in a run script"
            for file, workflow in all_workflows.items()
            for path, value in walk(workflow)
            if path.endswith(".run") and isinstance(value, str) and "${{" in value]


# ---------------------------------------------------------------------------- the tests


def test_actionlint_accepts_every_workflow() -> None:
    result = _run_actionlint(sorted(WORKFLOWS.glob("*.yml")), ROOT)
    assert result.returncode == 0, f"actionlint:\n{result.stdout}{result.stderr}"


def test_actionlint_rejects_a_broken_workflow(tmp_path: Path) -> None:
    """The linter really runs and really checks: a typo'd input and a bad `needs` fail."""
    target = tmp_path / ".github" / "workflows"
    target.mkdir(parents=True)
    shutil.copy(WORKFLOWS / "pulumi.yml", target / "pulumi.yml")
    shutil.copy(WORKFLOWS / "tests.yml", target / "tests.yml")
    broken = (WORKFLOWS / "deploy.yml").read_text()
    broken = broken.replace("command: up\n      stack: prod", "comand: up\n      stack: prod")
    broken = broken.replace("needs: up-dev", "needs: up-staging")
    (target / "deploy.yml").write_text(broken)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    result = _run_actionlint([target / "deploy.yml"], tmp_path)
    assert result.returncode != 0
    assert "comand" in result.stdout, result.stdout
    assert "up-staging" in result.stdout, result.stdout


RULES: dict[str, Callable[[dict[str, Workflow]], list[str]]] = {
    "preview": _preview_problems,
    "deploy": _deploy_problems,
    "secrets": _secret_problems,
    "permissions": _permission_problems,
    "injection": _injection_problems,
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_workflows_follow_the_delivery_rules(rule: str, workflows: dict[str, Workflow]) -> None:
    assert RULES[rule](workflows) == []


def _break(workflows: dict[str, Workflow], file: str, mutate: Callable[[Workflow], None]
           ) -> dict[str, Workflow]:
    broken = copy.deepcopy(workflows)
    mutate(broken[file])
    return broken


def _job(workflow: Workflow, name: str) -> dict[str, Any]:
    return _jobs(workflow)[name]


BREAKAGES: dict[str, tuple[str, str, Callable[[Workflow], None], str]] = {
    "prod before dev": ("deploy", "deploy.yml",
                        lambda w: _job(w, "up-prod").__setitem__("needs", "tests"),
                        "does not wait for up-dev"),
    "prod without approval": ("deploy", "deploy.yml",
                              lambda w: _job(w, "up-prod")["with"].__setitem__("environment",
                                                                                "dev"),
                              "approval-protected prod"),
    "deploys cancelled": ("deploy", "deploy.yml",
                          lambda w: w["concurrency"].__setitem__("cancel-in-progress", True),
                          "never cancel"),
    "dev untested": ("deploy", "deploy.yml",
                     lambda w: _job(w, "up-dev").pop("needs"), "test suite"),
    "environment dropped": ("deploy", "pulumi.yml",
                            lambda w: _job(w, "pulumi").pop("environment"),
                            "caller's environment"),
    "a stack not previewed": ("preview", "pull-request.yml",
                              lambda w: _job(w, "preview")["strategy"]["matrix"]
                              .__setitem__("stack", ["dev"]), "covers stacks"),
    "no pr comment": ("preview", "pull-request.yml",
                      lambda w: _job(w, "preview")["with"].__setitem__("comment-on-pr", False),
                      "does not comment"),
    "literal passphrase": ("secrets", "pulumi.yml",
                           lambda w: _job(w, "pulumi")["steps"][-1]["env"]
                           .__setitem__("PULUMI_CONFIG_PASSPHRASE", "hunter2"),
                           "PULUMI_CONFIG_PASSPHRASE is not taken from the secret store"),
    "fork secrets": ("secrets", "pull-request.yml",
                     lambda w: w["on"].__setitem__("pull_request_target", {}),
                     "pull_request_target"),
    "registry password in the file": ("secrets", "workspace-image.yml",
                                      lambda w: _job(w, "build")["steps"][3]["with"]
                                      .__setitem__("password", "hunter2"),
                                      "password is not taken from the secret store"),
    "title in a script": ("injection", "pulumi.yml",
                          lambda w: _job(w, "pulumi")["steps"][2].__setitem__(
                              "run", "echo ${{ github.event.pull_request.title }}"),
                          "expression in a run script"),
    "write-all": ("permissions", "deploy.yml",
                  lambda w: _job(w, "up-prod").__setitem__("permissions", {"contents": "write"}),
                  "may write ['contents']"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_each_rule_catches_its_breakage(breakage: str, workflows: dict[str, Workflow]) -> None:
    rule, file, mutate, expected = BREAKAGES[breakage]
    problems = RULES[rule](_break(workflows, file, mutate))
    assert any(expected in p for p in problems), problems


def test_pulumi_cli_matches_the_sdk_pin(workflows: dict[str, Workflow]) -> None:
    pins = dict(line.split("==", 1) for line in (ROOT / "requirements.txt").read_text().split()
                if "==" in line)
    assert workflows["pulumi.yml"]["env"]["PULUMI_CLI_VERSION"] == pins["pulumi"]


def test_actions_are_pinned_to_a_release(workflows: dict[str, Workflow]) -> None:
    """A floating ref (main, master, latest) would let an upstream push change our deploys."""
    for file, workflow in workflows.items():
        for path, value in walk(workflow):
            if path.endswith(".uses") and isinstance(value, str) and not value.startswith("./"):
                ref = value.rpartition("@")[2]
                assert re.fullmatch(r"v\d+(\.\d+){0,2}|[0-9a-f]{40}", ref), f"{file}{path}: {value}"


def _repository_files() -> list[Path]:
    """What would be committed: tracked and untracked-but-not-ignored files."""
    if not (ROOT / ".git").exists():
        # A source export without git metadata: everything outside virtualenvs and caches.
        skip = {"venv", ".venv", ".git", "__pycache__", ".mypy_cache", ".ruff_cache",
                ".pytest_cache"}
        return [p for p in ROOT.rglob("*")
                if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def test_no_credentials_in_the_repository() -> None:
    """Secrets live in the CI secret store and the cluster, never in a file we commit."""
    leaks = []
    for path in _repository_files():
        if path.stat().st_size > 2_000_000:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for what, pattern in _LEAKED_CREDENTIALS.items():
            if pattern.search(text) and path != Path(__file__).resolve():
                leaks.append(f"{path.relative_to(ROOT)}: {what}")
    assert leaks == []


def test_stack_files_hold_secrets_only_encrypted() -> None:
    """In Pulumi.<stack>.yaml a password-like key must be a `secure:` value, not plaintext."""
    for stack_file in ROOT.glob("Pulumi.*.yaml"):
        config = (yaml.safe_load(stack_file.read_text()) or {}).get("config") or {}
        for path, value in walk(config):
            key = path.rsplit(".", 1)[-1]
            # existingSecret, peerSecret...: the *name* of a Kubernetes Secret, no secret;
            # an object (mysql.credentials) is judged by its leaves, which walk() yields too.
            if (key.endswith("Secret") and isinstance(value, str)) or (
                    isinstance(value, dict) and set(value) != {"secure"}):
                continue
            if _SECRET_NAME.search(key) or "password" in key.lower():
                plaintext = not (isinstance(value, dict) and set(value) == {"secure"})
                assert not plaintext, (
                    f"{stack_file.name}{path} is plaintext; use `pulumi config set --secret`")


def test_workflows_use_the_projects_python(workflows: dict[str, Workflow]) -> None:
    target = re.search(r'target-version\s*=\s*"py(\d)(\d+)"',
                       (ROOT / "pyproject.toml").read_text())
    assert target is not None
    want = f"{target.group(1)}.{target.group(2)}"
    assert workflows["pulumi.yml"]["env"]["PYTHON_VERSION"] == want
    steps = _job(workflows["tests.yml"], "test")["steps"]
    versions = [s["with"]["python-version"] for s in steps
                if str(s.get("uses", "")).startswith("actions/setup-python@")]
    assert versions == [want]



def test_credential_patterns_recognise_real_shapes() -> None:
    """The scan above would pass vacuously if a pattern could never match."""
    samples = {
        "private key": "-----BEGIN " + "OPENSSH PRIVATE KEY-----",
        "Pulumi access token": "pul-" + "0123456789abcdef" * 2 + "01234567",
        "GitHub token": "ghp_" + "A1b2C3d4E5f6" * 3,
        "AWS access key id": "AKIA" + "ABCDEFGHIJKLMNOP",
        "kubeconfig client key": "client-key-data: " + "QUJD" * 12,
    }
    assert set(samples) == set(_LEAKED_CREDENTIALS)
    for what, sample in samples.items():
        assert _LEAKED_CREDENTIALS[what].search(sample), what


def test_workflow_installs_the_program_where_pulumi_yaml_expects_it(
        workflows: dict[str, Workflow]) -> None:
    """Pulumi.yaml runs the program from its virtualenv; the workflow must fill that one."""
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    virtualenv = project["runtime"]["options"]["virtualenv"]
    scripts = [str(s.get("run", "")) for s in _job(workflows["pulumi.yml"], "pulumi")["steps"]]
    assert any(f"python -m venv {virtualenv}\n" in s
               and f"{virtualenv}/bin/python -m pip install --quiet --requirement requirements.txt"
               in s for s in scripts), scripts
