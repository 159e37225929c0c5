"""What the per-call objects cost to build: `Call`, `Decision`, `Attempt`, `Outcome` as pymesh
defines them (slotted classes) against the alternatives DESIGN.md measured (a frozen slotted
dataclass, a NamedTuple). Pinned to one CPU; median of several `timeit` repeats.

    python bench/core_objects.py [--quick]
"""

from __future__ import annotations

import argparse
import timeit
from dataclasses import dataclass
from typing import Any, NamedTuple

from _common import log, machine_info, median, pin_client, update_doc, write_result

from pymesh.call import Attempt, Call, Decision, Outcome

NAME = "core_objects"


@dataclass(frozen=True, slots=True)
class FrozenCall:
    direction: str
    protocol: str
    scheme: str
    host: str
    port: int
    authority: str
    method: str
    target: bytes
    headers: Any
    native: Any
    replayable: bool
    deadline: float


class TupleCall(NamedTuple):
    direction: str
    protocol: str
    scheme: str
    host: str
    port: int
    authority: str
    method: str
    target: bytes
    headers: Any
    native: Any
    replayable: bool
    deadline: float


def per_call_objects() -> None:
    d = Decision("v1", "reviews.default.svc.cluster.local")
    call = Call(
        direction="outbound",
        protocol="http",
        scheme="http",
        host="reviews.default.svc.cluster.local",
        port=9080,
        authority="reviews:9080",
        method="GET",
        target=b"/reviews/1?x=1",
        headers=None,
        native=None,
        replayable=True,
        decision=d,
    )
    d.attempts.append(Attempt("127.0.0.1:8001"))
    Outcome(200, None, call.decision)


def frozen() -> None:
    FrozenCall("outbound", "http", "http", "r", 9080, "r:9080", "GET", b"/", None, None, True, 0.0)


def named_tuple() -> None:
    TupleCall("outbound", "http", "http", "r", 9080, "r:9080", "GET", b"/", None, None, True, 0.0)


def measure(fn: Any, number: int, repeat: int) -> float:
    return median(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    pinned = pin_client()
    number, repeat = (20_000, 3) if args.quick else (200_000, 7)
    rows = [
        ("Call + Decision + Attempt + Outcome (pymesh, slotted classes)", per_call_objects),
        ("one frozen slotted dataclass with Call's fields", frozen),
        ("one NamedTuple with Call's fields", named_tuple),
    ]
    lines = [
        f"# Benchmark: {NAME}",
        "",
        "The objects every meshed call builds, against the alternatives (µs per build, "
        "median of timeit repeats).",
        "",
        "| what | µs |",
        "| --- | --: |",
    ]
    for label, fn in rows:
        us = measure(fn, number, repeat)
        log(f"{NAME}: {label}: {us:.2f} µs")
        lines.append(f"| {label} | {us:.2f} |")
    lines += ["", f"Pinned: {pinned}. Run with `make bench` (`bench/core_objects.py`).", ""]
    lines += ["Measured on:", "", *[f"- {m}" for m in machine_info()]]
    md = "\n".join(lines) + "\n"
    write_result(NAME, md)
    if not args.quick:
        update_doc(NAME, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
