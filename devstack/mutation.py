"""make mutation: mutmut over the layer's core modules, then the score per module and the surviving mutants.

The tests import the layer as ``bridge`` (pytest's ``pythonpath``), while mutmut names a mutant after its file's path
from the working directory. So the run happens in ``.mutation/``, where ``bridge`` is the layer's package at the top
and the rest of the repository is linked in: mutmut's ``mutants/`` copy then holds ``bridge/`` itself, and the
names that the tests hit are the names that mutmut expects. Settings are in pyproject.toml's ``[tool.mutmut]``.

    python -m devstack.mutation            # run (resumes where an interrupted run stopped), then print the scores
    python -m devstack.mutation --report   # only print the scores of the last run
    python -m devstack.mutation --fresh    # forget the last run's results first
    python -m devstack.mutation core.http_api chat.grammar.x_parse   # only these modules' or functions' mutants
    python -m devstack.mutation --sample 30  # a seeded random 30 mutants of each module, the score with its interval
    python -m devstack.mutation --sample 30 kommo.intake kommo.webhook  # only these modules' part of that sample
    python -m devstack.mutation --sample 30 --cap 90  # each sampled mutant at most 90 s; those cut short are listed

A full run is thousands of mutants, and a mutant that survives runs every test that reaches its function (minutes
each for the shared helpers): hours on two cores. ``--sample`` measures each module's score on a random sample
instead (the same sample for the same seed and sources, so an interrupted run resumes it), and prints the Wilson 95 %
interval next to each score, so a reader sees how far the sampled score can be from the full one.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
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
ACCEPTED_IN = ROOT / "docs" / "testing.md"
# A row of the accepted survivors' tables: | `module.x_function__mutmut_N` | the change | why it is accepted |
ACCEPTED_ROW = re.compile(r"^\| `(?P<name>[\w.ǁ]+__mutmut_\d+)` \| (?P<change>.+?) \| .+ \|$")


def stage(fresh: bool) -> None:
    if fresh and STAGE.exists():
        shutil.rmtree(STAGE)
    STAGE.mkdir(exist_ok=True)
    for name, target in LINKS.items():
        link = STAGE / name
        if not link.is_symlink():
            link.symlink_to(target)
    # mutmut regenerates the mutants of a source file that changed, and forgets the verdicts of the functions whose
    # text changed while keeping the others: a change to the layer needs no fresh start. A change to the settings
    # (which files and lines are mutated, how the tests run) makes other mutants, so the copy is started over.
    mutants, stamp = STAGE / "mutants", STAGE / "settings.sha256"
    current = settings_hash(LINKS["pyproject.toml"])
    if mutants.exists() and stamp.exists() and stamp.read_text() != current:
        shutil.rmtree(mutants)
    stamp.write_text(current)


def settings_hash(settings: Path) -> str:
    """The mutmut settings, which decide which files and lines are mutated and how their tests run."""
    text = settings.read_text()
    start = text.find("[tool.mutmut]")
    end = text.find("\n[", start + 1)
    return hashlib.sha256(text[start : end if end > 0 else None].encode()).hexdigest()


def mutmut_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CI", None)  # the mutation profile is picked by the command line, not by the CI variable
    return env


def run(workers: int, names: list[str]) -> int:
    """``mutmut run`` for these mutants (names, or patterns such as ``bridge.kommo.webhook*``)."""
    mutmut = Path(sys.executable).parent / "mutmut"
    return subprocess.call([str(mutmut), "run", "--max-children", str(workers), *names], cwd=STAGE, env=mutmut_env())


def generate(workers: int) -> None:
    """Bring the mutants and mutmut's records of which tests reach which function up to today's code, testing none.

    mutmut has no switch for that: it is asked for a mutant that does not exist, and ends on saying none matches."""
    mutmut = Path(sys.executable).parent / "mutmut"
    done = subprocess.run(
        [str(mutmut), "run", "--max-children", str(workers), "__generate_only__"],
        cwd=STAGE,
        env=mutmut_env(),
        capture_output=True,
        text=True,
    )
    if "nothing matches" not in done.stdout + done.stderr:
        sys.stdout.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit("mutmut could not generate the mutants or record the tests (above)")


def mutant_names() -> dict[str, list[str]]:
    """Every mutant of each module, by name, from the .meta files mutmut writes when it generates them."""
    found: dict[str, list[str]] = {}
    for meta in sorted((STAGE / "mutants" / "bridge").rglob("*.py.meta")):
        module = str(meta.relative_to(STAGE / "mutants"))[: -len(".py.meta")].replace(os.sep, ".")
        found[module] = sorted(json.loads(meta.read_text())["exit_code_by_key"])
    return found


def sample(size: int, seed: int) -> list[str]:
    """``size`` mutants of each module (all of a smaller one), drawn with ``seed``: the same list on every run."""
    chosen: list[str] = []
    for module, names in mutant_names().items():
        chosen += random.Random(f"{seed}:{module}").sample(names, min(size, len(names)))
    return chosen


def wilson(killed: int, tested: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion: honest at small samples and near 100 %."""
    if not tested:
        return 0.0, 1.0
    p = killed / tested
    centre = (p + z * z / (2 * tested)) / (1 + z * z / tested)
    half = z * math.sqrt(p * (1 - p) / tested + z * z / (4 * tested * tested)) / (1 + z * z / tested)
    return max(0.0, centre - half), min(1.0, centre + half)


def run_capped(names: list[str], cap: float, workers: int) -> None:
    """Each mutant under mutmut's own switch (``MUTANT_UNDER_TEST``) with the tests mutmut recorded for its function,
    the quickest first, for at most ``cap`` seconds.

    A survivor of a shared helper runs most of the suite, minutes on a busy machine: with a cap, a sample takes hours,
    not days, and the mutants cut short are printed to be read by hand (then killed by a test, or accepted in
    docs/testing.md). Killed and survived are written into mutmut's files, as its own run writes them."""
    from mutmut.stats import status_by_exit_code
    from mutmut.utils.format_utils import mangled_name_from_mutant_name

    mutants = STAGE / "mutants"
    stats = json.loads((mutants / "mutmut-stats.json").read_text())
    tests_by, took = stats["tests_by_mangled_function_name"], stats["duration_by_test"]
    lock = threading.Lock()

    def one(name: str) -> tuple[str, str]:
        tests = sorted(tests_by.get(mangled_name_from_mutant_name(name), ()), key=lambda test: took.get(test, 1.0))
        if not tests:
            return name, "no tests"
        env = {**mutmut_env(), "MUTANT_UNDER_TEST": name}
        # As mutmut runs them: the first failure kills, in the same order each time, with few examples per property.
        pytest = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
        pytest.append("--hypothesis-profile=mutation")
        try:
            done = subprocess.run([*pytest, *tests], cwd=mutants, env=env, capture_output=True, timeout=cap)
        except subprocess.TimeoutExpired:
            return name, "cut short"
        if done.returncode not in (0, 1):
            return name, f"pytest exit {done.returncode}"
        with lock:
            record(name, done.returncode)
        return name, status_by_exit_code[done.returncode]

    with ThreadPoolExecutor(workers) as pool:
        for name, verdict in pool.map(one, names):
            print(f"{verdict:10} {name}", flush=True)


def record(name: str, exit_code: int) -> None:
    """Write one mutant's verdict into the .meta file of its module, where mutmut keeps its own."""
    meta = STAGE / "mutants" / (name.split(".x")[0].replace(".", os.sep) + ".py.meta")
    data = json.loads(meta.read_text())
    data["exit_code_by_key"][name] = exit_code
    meta.write_text(json.dumps(data, indent=4))


def verdicts() -> dict[str, dict[str, str]]:
    """Each module's mutants and their verdicts, from the .meta files mutmut writes next to each mutated file."""
    from mutmut.stats import status_by_exit_code

    found: dict[str, dict[str, str]] = {}
    for meta in sorted((STAGE / "mutants" / "bridge").rglob("*.py.meta")):
        module = str(meta.relative_to(STAGE / "mutants"))[: -len(".py.meta")].replace(os.sep, ".")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        found[module] = {name: status_by_exit_code[code] for name, code in codes.items()}
    return found


def accepted() -> dict[str, str]:
    """The surviving mutants accepted in docs/testing.md (equivalent, or timing or log text only), with the change.

    They are read from the tables there, one row per mutant, so the reason a reader sees is the one the score uses."""
    found: dict[str, str] = {}
    for line in ACCEPTED_IN.read_text().splitlines():
        row = ACCEPTED_ROW.match(line)
        if row:
            found[f"bridge.{row['name']}"] = row["change"]
    return found


def report(only: list[str] | None = None) -> bool:
    """Prints the score per module and every mutant not killed; True when every module reaches the target.

    The score counts the mutants tested: an interrupted run leaves some unchecked, and says how many. A survivor
    accepted in docs/testing.md is left out of its module's score, as an equivalent mutant is; the raw score, with
    them counted as not killed, is printed next to it. With ``only`` (a sample), the other mutants' verdicts are left
    out, so a score is the sample's alone."""
    found = verdicts()
    if only is not None:
        wanted = set(only)
        found = {module: {n: v for n, v in by.items() if n in wanted} for module, by in found.items()}
        found = {module: by for module, by in found.items() if by}  # modules left out of a restricted sample
    if not found:
        print("No results yet: run make mutation.", file=sys.stderr)
        return False
    if only is not None:
        print(f"A sample of {len(only)} mutants; 95 % is the Wilson interval of each module's score.")
    known = accepted()
    heading = {"killed": 6, "accepted": 8, "tested": 6, "score": 6, "raw": 6, "unchecked": 9, "95 %": 11}
    print(f"{'module':24} " + " ".join(f"{word:>{width}}" for word, width in heading.items()))
    met = True
    survivors: list[str] = []
    for module, by_name in found.items():
        counts = Counter(by_name.values())
        killed = sum(counts[status] for status in KILLED)
        unchecked = counts["not checked"]
        tested = len(by_name) - counts["skipped"] - unchecked
        spared = sum(1 for name, status in by_name.items() if status not in UNCOUNTED and name in known)
        counted = tested - spared
        score = killed / counted if counted else 0.0
        met = met and score >= TARGET and not unchecked
        flag = "" if score >= TARGET else "  below target"
        shown = f"{score:.0%}" if counted else "-"
        raw = f"{killed / tested:.0%}" if tested else "-"
        low, high = wilson(killed, counted)
        interval = f"{low:.0%}-{high:.0%}" if counted else "-"
        print(
            f"{module.removeprefix('bridge.'):24} {killed:6} {spared:8} {tested:6} {shown:>6} {raw:>6} {unchecked:9}"
            f" {interval:>11}{flag}"
        )
        survivors += [
            f"{name}: {status}" + (f" (accepted: {known[name]})" if name in known else "")
            for name, status in by_name.items()
            if status not in UNCOUNTED
        ]
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
    parser.add_argument("--sample", type=int, default=0, help="test this many random mutants of each module")
    parser.add_argument("--seed", type=int, default=2026, help="the sample's seed (default 2026)")
    parser.add_argument(
        "--cap", type=float, default=0, help="with --sample: at most this many seconds per mutant; the rest is printed"
    )
    args = parser.parse_args()
    chosen: list[str] | None = None
    if args.sample:
        if not mutant_names():
            stage(args.fresh)
            generate(args.workers)
        chosen = sample(args.sample, args.seed)
        if args.modules:
            # The same draw as the whole sample's, so a module's figures do not depend on which others were named.
            patterns = [f"bridge.{module}*" for module in args.modules]
            chosen = [name for name in chosen if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)]
    if not args.report:
        stage(args.fresh)
        if chosen is None:
            code = run(args.workers, [f"bridge.{module}*" for module in args.modules])
        else:
            # mutmut tests a named mutant again whatever its verdict: name only those not yet checked, so an
            # interrupted sample resumes.
            checked = {n for by in verdicts().values() for n, v in by.items() if v != "not checked"}
            pending = [name for name in chosen if name not in checked]
            if args.cap and pending:
                generate(args.workers)
                run_capped(pending, args.cap, args.workers)
                code = 0
            else:
                code = run(args.workers, pending) if pending else 0
        if code:
            return code
    return 0 if report(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
