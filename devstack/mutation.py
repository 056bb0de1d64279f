"""make mutation: mutmut over the layer's core modules, then the score per module and the surviving mutants.

The tests import the layer as ``bridge`` (pytest's ``pythonpath``), while mutmut names a mutant after its file's path
from the working directory. So the run happens in ``.mutation/``, where ``bridge`` is the layer's package at the top
and the rest of the repository is linked in: mutmut's ``mutants/`` copy then holds ``bridge/`` itself, and the
names that the tests hit are the names that mutmut expects. Settings are in pyproject.toml's ``[tool.mutmut]``.

    python -m devstack.mutation            # run (resumes where an interrupted run stopped), then print the scores
    python -m devstack.mutation --report   # only print the scores of the last run
    python -m devstack.mutation --fresh    # forget the last run's results first
    python -m devstack.mutation core.http_api chat.grammar.x_parse   # only these modules' or functions' mutants
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from devstack.template import ROOT

STAGE = ROOT / ".mutation"
# Linked into the stage as they are in the repository. tests/conftest.py finds the contract samples next to the
# repository, two folders up from itself: in the stage that is the stage, so "shared" is linked there too.
LINKS = {
    "bridge": ROOT / "layers" / "shared" / "bridge",
    "pyproject.toml": ROOT / "pyproject.toml",
    "tests": ROOT / "tests",
    "devstack": ROOT / "devstack",
    "functions": ROOT / "functions",
    "events": ROOT / "events",
    "template.yaml": ROOT / "template.yaml",
    "samconfig.toml": ROOT / "samconfig.toml",
    "shared": ROOT.parent / "shared",
}
TARGET = 0.85
# Verdicts that count as killed: the tests failed, or ran out of time (an endless loop is a failure a user sees).
KILLED = {"killed", "timeout", "caught by type check"}
UNCOUNTED = KILLED | {"skipped", "not checked"}


def stage(fresh: bool) -> None:
    if fresh and STAGE.exists():
        shutil.rmtree(STAGE)
    STAGE.mkdir(exist_ok=True)
    for name, target in LINKS.items():
        link = STAGE / name
        if not link.is_symlink():
            link.symlink_to(target)
    # mutmut copies the sources once and keeps its verdicts: after a change to the layer or to the settings, both are
    # of other mutants.
    mutants, stamp = STAGE / "mutants", STAGE / "sources.sha256"
    current = sources_hash(LINKS["bridge"], LINKS["pyproject.toml"])
    if mutants.exists() and (not stamp.exists() or stamp.read_text() != current):
        shutil.rmtree(mutants)
    stamp.write_text(current)


def sources_hash(folder: Path, settings: Path) -> str:
    """The layer's sources and the mutmut settings (which lines it mutates), which together make the mutants."""
    digest = hashlib.sha256()
    text = settings.read_text()
    start = text.find("[tool.mutmut]")
    end = text.find("\n[", start + 1)
    digest.update(text[start : end if end > 0 else None].encode())
    for path in sorted(folder.rglob("*.py")):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def run(workers: int, modules: list[str]) -> int:
    mutmut = Path(sys.executable).parent / "mutmut"
    names = [f"bridge.{module}*" for module in modules]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CI", None)  # the mutation profile is picked by the command line, not by the CI variable
    return subprocess.call([str(mutmut), "run", "--max-children", str(workers), *names], cwd=STAGE, env=env)


def verdicts() -> dict[str, dict[str, str]]:
    """Each module's mutants and their verdicts, from the .meta files mutmut writes next to each mutated file."""
    from mutmut.stats import status_by_exit_code

    found: dict[str, dict[str, str]] = {}
    for meta in sorted((STAGE / "mutants" / "bridge").rglob("*.py.meta")):
        module = str(meta.relative_to(STAGE / "mutants"))[: -len(".py.meta")].replace(os.sep, ".")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        found[module] = {name: status_by_exit_code[code] for name, code in codes.items()}
    return found


def report() -> bool:
    """Prints the score per module and every mutant not killed; True when every module reaches the target.

    The score counts the mutants tested: an interrupted run leaves some unchecked, and says how many."""
    found = verdicts()
    if not found:
        print("No results yet: run make mutation.", file=sys.stderr)
        return False
    print(f"{'module':28} {'killed':>7} {'tested':>7} {'score':>7} {'unchecked':>10}")
    met = True
    survivors: list[str] = []
    for module, by_name in found.items():
        counts = Counter(by_name.values())
        killed = sum(counts[status] for status in KILLED)
        unchecked = counts["not checked"]
        tested = len(by_name) - counts["skipped"] - unchecked
        score = killed / tested if tested else 0.0
        met = met and score >= TARGET and not unchecked
        flag = "" if score >= TARGET else "  below target"
        shown = f"{score:.1%}" if tested else "-"
        print(f"{module:28} {killed:7} {tested:7} {shown:>7} {unchecked:10}{flag}")
        survivors += [f"{name}: {status}" for name, status in by_name.items() if status not in UNCOUNTED]
    print(f"\nNot killed ({len(survivors)}); `.venv/bin/mutmut show <name>` in .mutation/ prints one's diff:")
    for line in survivors:
        print(f"  {line}")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", action="store_true", help="only print the scores of the last run")
    parser.add_argument("--fresh", action="store_true", help="forget the last run's results first")
    parser.add_argument(
        "modules", nargs="*", help="only these modules or functions, e.g. core.http_api chat.grammar.x_parse"
    )
    parser.add_argument("--workers", type=int, default=2, help="mutants tested at once (default 2)")
    args = parser.parse_args()
    if not args.report:
        stage(args.fresh)
        code = run(args.workers, args.modules)
        if code:
            return code
    return 0 if report() else 1


if __name__ == "__main__":
    sys.exit(main())
