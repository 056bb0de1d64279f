"""``make bench``: run every benchmark, print its figures, and write them to bench/RESULTS.md with the commands.

Each benchmark compares against a baseline measured in the same run (ratios and medians), since machines are noisy.
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
        ["bench/webhook_and_e2e.py", "--runs", "200", "--deals", "1000"],
    ),
]


def run(args: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "shared"), str(ROOT)])}
    env.update(POWERTOOLS_LOG_LEVEL="ERROR", POWERTOOLS_METRICS_DISABLED="true")
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return "\n".join(line for line in done.stdout.splitlines() if not line.startswith("{"))


def main() -> int:
    sections = []
    for title, args in BENCHES:
        print(f"== {title}", flush=True)
        started = time.monotonic()
        output = run(args)
        print(output, flush=True)
        command = "PYTHONPATH=layers/shared:. .venv/bin/python " + " ".join(args)
        sections.append(f"## {title}\n\n`{command}` ({time.monotonic() - started:.0f} s)\n\n```\n{output}\n```\n")
    header = (
        "# Benchmark results\n\n"
        f"Written by `make bench` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"Python {platform.python_version()}, {os.cpu_count()} cores. Figures are medians and ratios against a "
        "baseline measured in the same run; absolute times depend on the machine.\n\n"
    )
    (ROOT / "bench" / "RESULTS.md").write_text(header + "\n".join(sections), encoding="utf-8")
    print("written to bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
