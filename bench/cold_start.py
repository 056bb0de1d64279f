"""Cold start: what importing each handler costs, against ``import boto3, requests`` measured in the same run.

Each figure is the CPU time of fresh interpreter processes (so nothing is cached in memory; the bytecode cache is
warmed once first, as it is in a deployed layer). Every round times the baseline and each handler back to back, and
the ratio is the median of those paired ratios, so a noisy moment of the machine hits both sides of a ratio alike.
The bar: at most 1.5 times the baseline, and 1.2 for the Kommo intake routes, which answer inside Kommo's 2 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "layers" / "shared"
BAR = 1.5
BARS = {"kommo_stage": 1.2, "kommo_close": 1.2}
BASELINE = "import boto3, requests"
# What a function pays on its first sentence in another language, on top of its import: the catalogue (gettext,
# standard library), and for a date Babel's import and its locale data. Measured as the handler's import plus that
# first use, so the ratio reads against the same bar.
FIRST_SENTENCE = "; from bridge.core.i18n import speech; speech('es').minutes(90)"
FIRST_DATE = (
    "; from datetime import datetime, timezone; from bridge.core.i18n import speech;"
    " speech('ru').day_and_time(datetime.now(timezone.utc))"
)
FIRST_USE = {
    "mattermost_command": ("+ first Spanish answer", FIRST_SENTENCE),
    "worker": ("+ first Russian date", FIRST_DATE),
}


def handler_import(function_dir: Path) -> str:
    return f"import sys; sys.path[:0] = [{str(LAYER)!r}, {str(function_dir)!r}]; import app"


def time_process(code: str) -> float:
    """The CPU seconds (user + system) of one fresh interpreter that runs ``code``.

    CPU time rather than wall time: an import is CPU-bound once the files are cached, and on a shared machine the
    wall time also counts the moments other processes held the cores. A Lambda INIT has its vCPU to itself.
    """
    process = subprocess.Popen([sys.executable, "-c", code])
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, code)
    return usage.ru_utime + usage.ru_stime


def measure(runs: int) -> list[tuple[str, float, float]]:
    """(name, median seconds, median paired ratio to the baseline) for the baseline and every function."""
    # Interleave baseline and handlers so that a noisy moment hits both alike.
    functions = sorted(p for p in (ROOT / "functions").iterdir() if (p / "app.py").exists())
    samples: dict[str, list[float]] = {"baseline": [], **{p.name: [] for p in functions}}
    ratios: dict[str, list[float]] = {name: [] for name in samples}
    codes = {"baseline": BASELINE, **{p.name: handler_import(p) for p in functions}}
    for name, (label, code) in FIRST_USE.items():
        if name in codes:
            codes[f"{name} {label}"] = codes[name] + code
    samples.update({name: [] for name in codes if name not in samples})
    ratios.update({name: [] for name in codes if name not in ratios})
    for code in codes.values():
        time_process(code)  # warm the bytecode cache
    for _ in range(runs):
        for name, code in codes.items():
            samples[name].append(time_process(code))
        for name in codes:
            ratios[name].append(samples[name][-1] / samples["baseline"][-1])
    return [(name, statistics.median(samples[name]), statistics.median(ratios[name])) for name in samples]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    rows = measure(args.runs)
    print(f"cold import, {args.runs} rounds of fresh processes: median CPU time, median paired ratio to `{BASELINE}`")
    for name, seconds, ratio in rows:
        bar = BARS.get(name.split(" ")[0], BAR)
        verdict = "" if name == "baseline" else (f"ok (bar {bar}x)" if ratio <= bar else f"OVER THE BAR ({bar}x)")
        print(f"  {name:<44} {seconds * 1000:7.1f} ms  {ratio:5.2f}x  {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
