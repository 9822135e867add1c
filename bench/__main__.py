"""``venv/bin/python -m bench [NAME ...|all] [--quick] [...]``, NAME one of seeding, locks,
kube-locks, refresh, program, switchover, failover.
kube-locks, refresh, program, switchover, backup.
    return {"seeding": seeding, "locks": locks, "kube-locks": kube_locks, "refresh": refresh,
            "program": program, "switchover": switchover, "failover": failover, "backup": backup}

One command runs every benchmark (or the ones named) at its default size, prints each
report's tables and targets, and writes them as JSON under ``bench/results/``.
``--quick`` shrinks every benchmark to a size that finishes in seconds: the smoke test
runs it so the benchmarks do not rot, but its figures are not the ones to quote.

Exit status: 0 when everything ran (a missed target is a finding, not a crash), 1 when
a benchmark could not run, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from bench._procs import BenchUnavailable
from bench._report import RESULTS_DIR, Report, machine

NAMES = ("seeding", "locks", "kube-locks", "refresh", "program", "switchover", "failover",
         "backup")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    # Checked in main(), not with choices=: argparse checks a nargs="*" default against
    # the choices as one value and rejects a bare `python -m bench`.
    parser.add_argument("benchmarks", nargs="*", metavar="BENCHMARK",
                        help=f"any of {', '.join(NAMES)}, or all (default)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (seconds, not minutes): checks the benchmarks run")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help="where JSON results go (default: bench/results)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where servers and copies live (default: a temp dir in /tmp)")
    seeding = parser.add_argument_group("seeding")
    seeding.add_argument("--size-mb", type=_positive, default=None,
                         help="InnoDB data on the primary, MiB (default 1024; quick 32)")
    seeding.add_argument("--repeats", type=_positive, default=None,
                         help="runs of each physical copy or backup, median reported "
                         "(default 3, backup 2; quick 1)")
    locks = parser.add_argument_group("locks")
    locks.add_argument("--contenders", type=_positive, default=None,
                       help="clients fighting for one lock (default 8)")
    locks.add_argument("--handoffs", type=_positive, default=None,
                       help="handoffs measured per contended run (default 400; quick 40)")
    refresh = parser.add_argument_group("refresh")
    refresh.add_argument("--replicas", type=_positive, default=None,
                         help="replicas behind the primary (default 2)")
    switch = parser.add_argument_group("switchover")
    switch.add_argument("--switchovers", type=_positive, default=None,
                        help="switchovers timed under the writer (default 12; quick 3)")
    backup = parser.add_argument_group("backup")
    backup.add_argument("--backup-size-mb", type=_positive, default=None,
                        help="InnoDB data backed up, MiB (default 256; quick 8)")
    backup.add_argument("--archive-interval", type=_positive, default=None,
                        help="archiveIntervalSeconds under the writer (default 10; quick 2)")
    program = parser.add_argument_group("program")
    program.add_argument("--runs", type=_positive, default=None,
                         help="program runs, each in a fresh interpreter (default 5; quick 2)")
    failover = parser.add_argument_group("failover")
    failover.add_argument("--rounds", type=_positive, default=None,
                          help="primaries SIGKILLed, one failover each (default 20; quick 2)")
    return parser


def parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, tuple[str, ...]]:
    """Arguments and the benchmarks to run, in the documented order; exits 2 on bad input."""
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = [name for name in args.benchmarks if name not in (*NAMES, "all")]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from "
                     f"{', '.join(NAMES)} or all")
    wanted = args.benchmarks or ["all"]
    return args, NAMES if "all" in wanted else tuple(dict.fromkeys(wanted))


def _runners(args: argparse.Namespace) -> dict[str, Callable[[], Report]]:
    quick: bool = args.quick

    def pick(value: int | None, default: int, tiny: int) -> int:
        return value if value is not None else (tiny if quick else default)

    def seeding() -> Report:
        from bench.seeding import SeedingOptions, run  # noqa: PLC0415 - only what is asked

        return run(SeedingOptions(size_mb=pick(args.size_mb, 1024, 32), workdir=args.workdir,
                                  repeats=pick(args.repeats, 3, 1)))

    def locks() -> Report:
        from bench.locks import LocksOptions, run  # noqa: PLC0415

        return run(LocksOptions(contenders=pick(args.contenders, 8, 4),
                                handoffs=pick(args.handoffs, 400, 40),
                                workdir=args.workdir))

    def kube_locks() -> Report:
        from bench.kube_locks import KubeLocksOptions, run  # noqa: PLC0415

        return run(KubeLocksOptions(contenders=pick(args.contenders, 8, 4),
                                    handoffs=pick(args.handoffs, 200, 20),
                                    workdir=args.workdir))

    def refresh() -> Report:
        from bench.refresh import RefreshOptions, run  # noqa: PLC0415

        return run(RefreshOptions(replicas=pick(args.replicas, 2, 1),
                                  rounds=pick(None, 20, 3), workdir=args.workdir))

    def program() -> Report:
        from bench.program import ProgramOptions, run  # noqa: PLC0415

        return run(ProgramOptions(runs=pick(args.runs, 5, 2)))

    def switchover() -> Report:
        from bench.switchover import SwitchoverOptions, run  # noqa: PLC0415

        return run(SwitchoverOptions(switchovers=pick(args.switchovers, 12, 3),
                                     commits=pick(None, 300, 30), workdir=args.workdir))

    def failover() -> Report:
        from bench.failover import FailoverOptions, run  # noqa: PLC0415

        return run(FailoverOptions(rounds=pick(args.rounds, 20, 2), workdir=args.workdir))

    def backup() -> Report:
        from bench.backup import BackupOptions, run  # noqa: PLC0415

        interval = pick(args.archive_interval, 10, 2)
        return run(BackupOptions(size_mb=pick(args.backup_size_mb, 256, 8),
                                 repeats=pick(args.repeats, 2, 1),
                                 transactions=pick(None, 1000, 50), interval=interval,
                                 seconds=pick(None, 40, 4 * interval), workdir=args.workdir))

    return {"seeding": seeding, "locks": locks, "kube-locks": kube_locks, "refresh": refresh,
            "program": program, "switchover": switchover, "failover": failover, "backup": backup}


def main(argv: Sequence[str] | None = None) -> int:
    args, names = parse(argv)
    runners = _runners(args)
    print("machine: " + ", ".join(f"{k}={v}" for k, v in machine().items()), flush=True)
    failed = []
    for name in names:
        print(f"\n... running {name}", flush=True)
        load_before = os.getloadavg()[0]
        try:
            report = runners[name]()
        except BenchUnavailable as error:
            print(f"{name}: cannot run here: {error}", file=sys.stderr)
            failed.append(name)
            continue
        except Exception:  # noqa: BLE001 - report it and go on with the other benchmarks
            traceback.print_exc()
            failed.append(name)
            continue
        if args.quick:
            report.parameters["quick"] = True
        # Other work on the machine skews every figure; the load says how much to trust it.
        report.parameters["load_1m"] = f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}"
        print(report.render(), flush=True)
        print(f"\nresults: {report.save(args.results_dir)}", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
