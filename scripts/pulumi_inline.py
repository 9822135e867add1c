"""``pulumi up`` of this project without a Python language host: the Automation API.

Why: the CLI reaches a Python program through ``pulumi-language-python``, a Go program
that no module proxy serves here (tools/pulumi/README.md), so a CLI built from source
cannot run ``pulumi up`` on its own. The Automation API needs no language host: this
process serves the language runtime itself (an inline program) and starts the CLI with
``--client``. The program is the project's ``__main__.py``, run unmodified as
``__main__``; the project directory (``Pulumi.yaml``, ``Pulumi.<stack>.yaml``) is the
working directory of the CLI and of the dynamic providers' process, exactly as with
``pulumi up``. ``scripts/deploy.sh`` uses this when no language host is installed, and
tests/e2e deploys through :func:`inline_stack` as well.

    venv/bin/python -m scripts.pulumi_inline up e2e --yes     # from the project directory
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pulumi import automation as auto

COMMANDS = ("up", "preview", "refresh", "destroy")


def inline_stack(project_dir: Path, stack: str, *, pulumi_home: Path | None = None,
                 pulumi_command: auto.PulumiCommand | None = None,
                 create: Callable[..., auto.Stack] = auto.create_or_select_stack,
                 ) -> auto.Stack:
    """The stack ``stack`` of the project in ``project_dir``, its program that project's
    ``__main__.py``; ``create`` is ``auto.create_stack`` to insist on a new stack."""
    main = project_dir / "__main__.py"

    def program() -> None:
        runpy.run_path(str(main), run_name="__main__")

    workspace = auto.LocalWorkspaceOptions(
        work_dir=str(project_dir),
        pulumi_home=str(pulumi_home) if pulumi_home else None,
        pulumi_command=pulumi_command,
    )
    created: auto.Stack = create(stack, project_name=_project_name(project_dir),
                                 program=program, opts=workspace)
    return created


def _project_name(project_dir: Path) -> str:
    for line in (project_dir / "Pulumi.yaml").read_text(encoding="utf-8").splitlines():
        if line.startswith("name:"):
            return line.split(":", 1)[1].strip()
    raise SystemExit(f"error: {project_dir / 'Pulumi.yaml'} has no top-level 'name:'")


def _command() -> auto.PulumiCommand | None:
    """The ``pulumi`` on PATH (the Automation API would otherwise look elsewhere first)."""
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(directory) / "pulumi"
        if directory and candidate.is_file() and os.access(candidate, os.X_OK):
            return auto.PulumiCommand(root=str(candidate.parent.parent))
    return None


def _echo(line: str) -> None:
    """The CLI's own progress output, line by line, as `pulumi up` prints it."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pulumi_inline", description="Run a Pulumi command of this project's program "
        "through the Automation API (no Python language host needed).")
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("stack")
    parser.add_argument("--yes", "-y", action="store_true",
                        help="up/destroy without asking (the Automation API cannot ask)")
    parser.add_argument("--diff", action="store_true", help="show a detailed diff")
    parser.add_argument("--expect-no-changes", action="store_true",
                        help="fail if the command would change anything")
    args = parser.parse_args(argv)
    if args.command in ("up", "destroy") and not args.yes:
        parser.error(f"{args.command} needs --yes here: the Automation API cannot ask for "
                     "confirmation (run `preview` first to see the changes)")
    # The project is the working directory, as for `pulumi up` (deploy.sh cds into it).
    project_dir = Path.cwd()
    if not (project_dir / "Pulumi.yaml").is_file():
        parser.error(f"no Pulumi.yaml in {project_dir}: run it from the project directory")
    stack = inline_stack(project_dir, args.stack, pulumi_command=_command())
    try:
        if args.command == "up":
            stack.up(on_output=_echo, diff=args.diff, expect_no_changes=args.expect_no_changes)
        elif args.command == "preview":
            stack.preview(on_output=_echo, diff=args.diff,
                          expect_no_changes=args.expect_no_changes)
        elif args.command == "refresh":
            stack.refresh(on_output=_echo, expect_no_changes=args.expect_no_changes)
        else:
            stack.destroy(on_output=_echo)
    except auto.CommandError as error:
        sys.stderr.write(f"error: pulumi {args.command} of {args.stack} failed:\n{error}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
