"""What is installed is what was locked: a requirement edited without `make lock`, or a layer that would ship other
library versions than the tests ran, fails here instead of in a deploy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LAYER = ("layers/shared/requirements.txt", "layers/shared/requirements.lock")
DEV = ("requirements-dev.txt", "requirements-dev.lock")
TOOLS = (".ci/tools-requirements.txt", ".ci/tools-requirements.lock")
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)")


def inputs(path: str) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in (ROOT / path).read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def pins(path: str) -> dict[str, dict[str, int]]:
    """Each locked package's versions (more than one where markers fork by Python version), each with its hashes."""
    found: dict[str, dict[str, int]] = {}
    current: tuple[str, str] | None = None
    for line in (ROOT / path).read_text().splitlines():
        if match := PIN.match(line):
            current = (canonicalize_name(match["name"]), match["version"])
            found.setdefault(current[0], {})[current[1]] = 0
        elif line.strip().startswith("--hash=sha256:") and current:
            found[current[0]][current[1]] += 1
        elif line and not line.startswith((" ", "#")):
            pytest.fail(f"{path}: not a pinned requirement: {line!r}")
    return found


@pytest.mark.parametrize(("source", "lock"), [LAYER, DEV, TOOLS], ids=["layer", "dev", "tools"])
def test_every_requirement_is_locked_at_a_version_it_allows_with_hashes(source: str, lock: str) -> None:
    locked = pins(lock)
    stale = [
        str(requirement)
        for requirement in inputs(source)
        if not (versions := locked.get(canonicalize_name(requirement.name)))
        or not all(requirement.specifier.contains(version, prereleases=True) for version in versions)
    ]
    assert not stale, f"{source} asks for {stale}, which {lock} does not hold: run `make lock`"
    unhashed = sorted(f"{name}=={version}" for name, vs in locked.items() for version, n in vs.items() if not n)
    assert not unhashed, f"{lock} pins without a hash: {unhashed}"


def test_the_tests_run_the_library_versions_the_layer_ships() -> None:
    dev = pins(DEV[1])
    differ = {
        name: (sorted(layer), sorted(dev.get(name, {})))
        for name, layer in pins(LAYER[1]).items()
        if set(dev.get(name, {})) != set(layer)
    }
    assert not differ, f"layer lock vs dev lock (package: layer, dev): {differ}; run `make lock`"
