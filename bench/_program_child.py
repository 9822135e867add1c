"""One fresh interpreter running the prod stack's program under the project's mocks.

Run by :mod:`bench.program` as ``python -m bench._program_child STACK RUNS``; prints one
JSON line of phase times. A fresh process per sample is the point: `pulumi up` and a
CI unit-test run both pay the interpreter and import cost every time, so a figure
taken only in a warm process would flatter the program.
"""

from __future__ import annotations

import json
import sys
import time

_started = time.perf_counter()


def main() -> None:
    stack, runs = sys.argv[1], int(sys.argv[2])
    imports_started = time.perf_counter()
    import pulumi  # noqa: PLC0415, F401 - the import cost is what is measured
    import pulumi_kubernetes  # noqa: PLC0415, F401

    from tests.support import mocks  # noqa: PLC0415

    imported = time.perf_counter()
    first_started = time.perf_counter()
    result = mocks.run_stack(stack)
    first = time.perf_counter() - first_started
    repeats = []
    for _ in range(runs - 1):
        started = time.perf_counter()
        mocks.run_stack(stack)
        repeats.append(time.perf_counter() - started)
    print(json.dumps({"imports": imported - imports_started, "first_run": first,
                      "repeats": repeats, "resources": len(result.resources),
                      "in_process_total": time.perf_counter() - _started}))


if __name__ == "__main__":
    main()
