"""The arbiter image holds exactly what ``python -m arbiter`` imports, and never Pulumi.

The Dockerfile copies a list of this repository's modules and installs a list of
packages; both are checked here against the imports of the two programs, followed
through the repository (static imports, including the ones inside functions), so a new
import cannot ship an image that fails at start.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "arbiter" / "Dockerfile"
LOCAL = ("arbiter", "components", "distlock")
# Import name -> distribution name, for the third-party packages the programs use.
DISTRIBUTIONS = {"pymysql": "pymysql", "kubernetes": "kubernetes", "grpc": "grpcio",
                 "google": "protobuf", "cryptography": "cryptography"}
# What the kubernetes client installs with itself (distlock's loader imports them).
BROUGHT_BY_KUBERNETES = {"urllib3", "yaml"}


def _module_file(name: str) -> Path | None:
    path = REPO.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _walk(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under ``if TYPE_CHECKING:`` (annotations, never run)."""
    nodes: list[ast.AST] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        nodes.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) \
                    and child.test.id == "TYPE_CHECKING":
                pending += child.orelse
                continue
            pending.append(child)
    return nodes


def _imports(path: Path, module: str) -> set[str]:
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in _walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def _closure() -> tuple[set[Path], set[str]]:
    """Repository files and third-party top-level packages reachable from arbiter."""
    files: set[Path] = set()
    external: set[str] = set()
    pending = ["arbiter", "arbiter.__main__"]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        top = name.split(".")[0]
        if top not in LOCAL:
            external.add(top)
            continue
        path = _module_file(name)
        if path is None:
            continue  # a name imported from a module, not a module
        files.add(path)
        # Every parent package's __init__ runs on import.
        parts = name.split(".")
        pending += [".".join(parts[:i]) for i in range(1, len(parts))]
        pending += sorted(_imports(path, name))
    return files, external


def _copied() -> set[Path]:
    copied: set[Path] = set()
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if not line.startswith("COPY "):
            continue
        *sources, _target = line.split()[1:]
        for source in sources:
            path = REPO / source
            copied |= set(path.rglob("*.py")) if path.is_dir() else {path}
    return copied


def test_the_image_copies_every_module_the_programs_import() -> None:
    files, _ = _closure()
    missing = sorted(str(p.relative_to(REPO)) for p in files - _copied())
    assert not missing, f"deploy/arbiter/Dockerfile does not copy {missing}"


def test_the_programs_never_import_pulumi() -> None:
    _, external = _closure()
    assert not {e for e in external if e.startswith("pulumi")}, external
    # And at run time, with pulumi unimportable.
    code = ("import sys; sys.modules['pulumi'] = None; sys.modules['pulumi_kubernetes'] = None; "
            "import arbiter._cli, arbiter._failover, arbiter._agent")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_the_image_installs_the_requirements_pins() -> None:
    _, external = _closure()
    stdlib = set(sys.stdlib_module_names)
    needed = {DISTRIBUTIONS[e] for e in external - stdlib if e in DISTRIBUTIONS}
    unknown = external - stdlib - set(DISTRIBUTIONS) - BROUGHT_BY_KUBERNETES
    assert not unknown, f"imports with no distribution listed here: {unknown}"
    pins = dict(re.findall(r"^([a-z0-9-]+)==(\S+)$", (REPO / "requirements.txt").read_text(),
                           re.MULTILINE))
    installed = dict(re.findall(r"\b([a-z0-9-]+)==(\S+)", DOCKERFILE.read_text()))
    for name in needed:
        assert installed.get(name) == pins[name], (name, installed.get(name), pins[name])
    assert "pulumi" not in installed
