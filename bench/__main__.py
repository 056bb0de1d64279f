"""``make bench``: run every benchmark, print its figures, and write them to bench/RESULTS.md with the commands.

Each benchmark compares against a baseline measured in the same run (ratios and medians), since machines are noisy.
``python -m bench bulk_move`` runs the benchmarks whose script names are given and replaces only their sections
(``make cost`` is ``python -m bench cost``).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHES = [
    ("Cold start: handler import vs `import boto3, requests`", ["bench/cold_start.py", "--runs", "20"]),
    ("Sweeper cost vs table size", ["bench/sweeper_scale.py", "--sizes", "10000,100000"]),
    (
        "Kommo webhook answer time and end-to-end throughput",
        ["bench/webhook_and_e2e.py", "--runs", "200", "--naive-runs", "100", "--deals", "1000"],
    ),
    ("Bulk move of 500 deals on the Build plan", ["bench/bulk_move.py", "--deals", "500", "--scale", "20"]),
    ("AWS cost per room at eu-west-1 list prices", ["bench/cost.py", "--rooms", "20"]),
    ("Whereby events answer time and points per held meeting", ["bench/whereby_events.py", "--runs", "200"]),
    ("Slack `/whereby`: acknowledgement time", ["bench/slack_ack.py", "--samples", "100"]),
]
RESULTS = ROOT / "bench" / "RESULTS.md"


def run(args: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "shared"), str(ROOT)])}
    env.update(POWERTOOLS_LOG_LEVEL="ERROR", POWERTOOLS_METRICS_DISABLED="true")
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return "\n".join(line for line in done.stdout.splitlines() if not line.startswith("{"))


def main() -> int:
    wanted = set(sys.argv[1:])
    unknown = wanted - {Path(args[0]).stem for _, args in BENCHES}
    if unknown:
        raise SystemExit(f"no benchmark named {', '.join(sorted(unknown))}")
    sections = previous_sections() if wanted else {}
    for title, args in BENCHES:
        if wanted and Path(args[0]).stem not in wanted:
            continue
        print(f"== {title}", flush=True)
        started = time.monotonic()
        output = run(args)
        print(output, flush=True)
        command = "PYTHONPATH=layers/shared:. .venv/bin/python " + " ".join(args)
        took = f"{time.monotonic() - started:.0f} s" + (f", {now()}" if wanted else "")
        sections[title] = f"## {title}\n\n`{command}` ({took})\n\n```\n{output}\n```\n"
    header = (
        "# Benchmark results\n\n"
        f"Written by `make bench` on {now()}, "
        f"Python {platform.python_version()}, {os.cpu_count()} cores. Figures are medians and ratios against a "
        "baseline measured in the same run; absolute times depend on the machine.\n\n"
    )
    if wanted and RESULTS.exists():  # the other sections keep the date of the run that wrote them
        header = RESULTS.read_text(encoding="utf-8").split("\n## ", 1)[0].rstrip("\n") + "\n\n"
    ordered = [sections[title] for title, _ in BENCHES if title in sections]
    RESULTS.write_text(header + "\n".join(ordered), encoding="utf-8")
    print("written to bench/RESULTS.md")
    return 0


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def previous_sections() -> dict[str, str]:
    """The sections of the last RESULTS.md by title, for a run of some benchmarks only."""
    if not RESULTS.exists():
        return {}
    parts = RESULTS.read_text(encoding="utf-8").split("\n## ")[1:]
    return {part.split("\n", 1)[0]: "## " + part.rstrip("\n") + "\n" for part in parts}


if __name__ == "__main__":
    raise SystemExit(main())
