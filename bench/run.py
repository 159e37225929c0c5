"""Run every benchmark: each module bench/<name>.py (not starting with `_`) that defines
`main(argv: list[str]) -> int`.

    python bench/run.py [--only NAME ...] [ARGS ...]

ARGS are passed to every benchmark's main (each accepts at least `--quick`). Exits non-zero
if a benchmark could not run; never because of its result.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def discover() -> list[str]:
    """Names of the benchmark modules, sorted (helpers start with `_`)."""
    return sorted(
        p.stem for p in BENCH.glob("*.py") if not p.name.startswith("_") and p.name != "run.py"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", metavar="NAME", help="run only NAME")
    args, rest = parser.parse_known_args(argv)
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))

    names = discover()
    unknown = set(args.only or ()) - set(names)
    if unknown:
        parser.error(f"no benchmark named {', '.join(sorted(unknown))} (have: {names})")

    failed: list[str] = []
    ran = 0
    for name in names:
        if args.only and name not in args.only:
            continue
        module = importlib.import_module(name)
        entry = getattr(module, "main", None)
        if not callable(entry):
            continue
        print(f"== bench: {name} {' '.join(rest)}".rstrip(), file=sys.stderr, flush=True)
        ran += 1
        try:
            code = entry(list(rest))
        except Exception:
            traceback.print_exc()
            code = 1
        if code:
            failed.append(name)
    if not ran:
        print("bench: no benchmark found", file=sys.stderr)
        return 1
    if failed:
        print(f"bench: could not run: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
