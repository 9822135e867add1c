"""Command line: ``python -m arbiter run|agent --config FILE [--ordinal N]``.

Exit status: 0 after SIGTERM/SIGINT, 2 on bad configuration (the message lists every
problem), 1 on anything else. Logs go to stderr, one line per decision.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from arbiter._agent import Agent
from arbiter._config import ConfigError, load
from arbiter._failover import Arbiter
from arbiter._kube import Kube, RecordStore


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m arbiter",
                                     description="automatic MySQL/MariaDB failover")
    parser.add_argument("command", choices=("run", "agent"),
                        help="run: the arbiter (leader election, failover); agent: the "
                             "fencing agent beside one server")
    parser.add_argument("--config", type=Path, required=True, help="the JSON configuration")
    parser.add_argument("--ordinal", type=int, default=None,
                        help="agent: the server's ordinal (default: $POD_INDEX)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = load(args.config)
    except ConfigError as error:
        sys.stderr.write(f"{error}\n")
        return 2
    store = RecordStore(config.record_namespace, config.record_name,
                        kubeconfig=config.kubeconfig)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.command == "agent":
        ordinal = args.ordinal if args.ordinal is not None else os.environ.get("POD_INDEX")
        if ordinal is None or not str(ordinal).isdigit():
            sys.stderr.write(f"agent: --ordinal or $POD_INDEX must be a whole number, got "
                             f"{ordinal!r}\n")
            return 2
        try:
            agent = Agent(config, store, int(ordinal))
        except ValueError as error:
            sys.stderr.write(f"{error}\n")
            return 2
        agent.run(stop)
        return 0
    Arbiter(config, store, Kube(config)).run(stop)
    return 0
