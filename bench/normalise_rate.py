"""Benchmark: numbers/s of `dispatcher.numbers.normalise` on valid SE/GB/US/DE numbers.

Generates --count valid numbers in the shapes lists have (national with separators,
`+` international, `00`/`011` international, bare international), then prints the median
of --runs timed runs, next to phonenumbers alone (parse + is_valid_number, the slow path).

    .venv/bin/python bench/normalise_rate.py --count 200000 --runs 3
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from dispatcher.numbers import _normalise_slowly, normalise

Shape = Callable[[random.Random], tuple[str, str]]


def _se(rng: random.Random) -> tuple[str, str]:
    a, b = rng.choice("02369"), rng.randrange(10_000_000)
    s = f"{b:07d}"
    return rng.choice(
        [
            (f"07{a}-{s[:3]} {s[3:5]} {s[5:]}", "SE"),
            (f"07{a}{s}", "SE"),
            (f"+46 7{a} {s[:3]} {s[3:5]} {s[5:]}", "SE"),
            (f"+467{a}{s}", "SE"),
            (f"00467{a}{s}", "SE"),
            (f"467{a}{s}", "SE"),
        ]
    )


def _gb(rng: random.Random) -> tuple[str, str]:
    nsn = f"7{rng.randrange(100, 1000)}{rng.randrange(1_000_000):06d}"
    region = rng.choice(["GB", "SE"])
    return rng.choice(
        [
            (f"0{nsn[:4]} {nsn[4:]}", "GB"),
            (f"+44 {nsn[:4]} {nsn[4:]}", region),
            (f"0044{nsn}", region),
            (f"44{nsn}", region),
        ]
    )


def _us(rng: random.Random) -> tuple[str, str]:
    area, exchange, line = rng.randrange(200, 1000), rng.randrange(200, 1000), rng.randrange(10**4)
    region = rng.choice(["US", "SE"])
    return rng.choice(
        [
            (f"({area}) {exchange}-{line:04d}", "US"),
            (f"{area}-{exchange}-{line:04d}", "US"),
            (f"+1 {area}-{exchange}-{line:04d}", region),
            (f"011 1 {area} {exchange} {line:04d}", "US"),
            (f"1{area}{exchange}{line:04d}", region),
        ]
    )


def _de(rng: random.Random) -> tuple[str, str]:
    nsn = f"1{rng.choice(['51', '52', '57', '60', '62', '70', '71', '72', '76'])}"
    nsn += f"{rng.randrange(10**8):08d}"
    region = rng.choice(["DE", "SE"])
    return rng.choice(
        [
            (f"0{nsn[:3]} {nsn[3:]}", "DE"),
            (f"0{nsn[:3]}/{nsn[3:]}", "DE"),
            (f"+49 {nsn[:3]} {nsn[3:]}", region),
            (f"0049{nsn}", region),
            (f"49{nsn}", region),
        ]
    )


def generate(count: int, seed: int = 1) -> list[tuple[str, str]]:
    """`count` (raw, region) pairs, all valid (checked with phonenumbers alone)."""
    rng = random.Random(seed)
    shapes: list[Shape] = [_se, _se, _gb, _us, _de]  # a Swedish sender's list, mostly SE
    out: list[tuple[str, str]] = []
    while len(out) < count:
        raw, region = rng.choice(shapes)(rng)
        if _normalise_slowly(raw, region)[0] is not None:
            out.append((raw, region))
    return out


def rate(fn: Callable[[str, str], tuple[str | None, str | None]], numbers: list) -> float:
    start = time.perf_counter()
    for raw, region in numbers:
        fn(raw, region)
    return len(numbers) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-reference", action="store_true", help="time normalise only")
    args = parser.parse_args()

    numbers = generate(args.count)
    mismatches = sum(1 for raw, r in numbers if normalise(raw, r) != _normalise_slowly(raw, r))
    fast = statistics.median(rate(normalise, numbers) for _ in range(args.runs))
    print(
        f"normalise: {len(numbers):,} valid SE/GB/US/DE numbers, median of {args.runs}:"
        f" {fast:,.0f} numbers/s (disagreements with phonenumbers alone: {mismatches})"
    )
    if not args.skip_reference:
        slow = statistics.median(rate(_normalise_slowly, numbers) for _ in range(args.runs))
        print(
            f"phonenumbers alone (parse + is_valid_number): {slow:,.0f} numbers/s;"
            f" normalise is {fast / slow:.1f}x"
        )
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
