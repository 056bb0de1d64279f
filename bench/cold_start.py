"""Cold start: what importing each handler costs, against ``import boto3, requests`` measured in the same run.

Each figure is the median of fresh interpreter processes (so nothing is cached in memory; the bytecode cache is
warmed once first, as it is in a deployed layer). The bar: at most 1.5 times the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "layers" / "shared"
BAR = 1.5
BASELINE = "import boto3, requests"


def handler_import(function_dir: Path) -> str:
    return f"import sys; sys.path[:0] = [{str(LAYER)!r}, {str(function_dir)!r}]; import app"


def time_process(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


def measure(runs: int) -> list[tuple[str, float, float]]:
    """(name, median seconds, ratio to the baseline) for the baseline and every function."""
    # Interleave baseline and handlers so that a noisy moment hits both alike.
    functions = sorted(p for p in (ROOT / "functions").iterdir() if (p / "app.py").exists())
    samples: dict[str, list[float]] = {"baseline": [], **{p.name: [] for p in functions}}
    codes = {"baseline": BASELINE, **{p.name: handler_import(p) for p in functions}}
    for code in codes.values():
        time_process(code)  # warm the bytecode cache
    for _ in range(runs):
        for name, code in codes.items():
            samples[name].append(time_process(code))
    base = statistics.median(samples["baseline"])
    return [(name, statistics.median(values), statistics.median(values) / base) for name, values in samples.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    rows = measure(args.runs)
    print(f"cold import, median of {args.runs} fresh processes (bar: {BAR}x `{BASELINE}`)")
    for name, seconds, ratio in rows:
        verdict = "" if name == "baseline" else ("ok" if ratio <= BAR else "OVER THE BAR")
        print(f"  {name:<20} {seconds * 1000:7.1f} ms  {ratio:5.2f}x  {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
