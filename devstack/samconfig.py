"""The stack name and region of a deployment environment, as ``samconfig.toml`` has them.

``sam deploy --guided`` saves its answers under ``[<env>.deploy.parameters]``; the hand-written defaults live
under ``[<env>.global.parameters]``. Operator commands read the same place, so they act on the stack that was
deployed, in its region, whatever the shell's AWS profile says. Standard library only: the Makefile calls it
before any virtual environment exists.

``python -m devstack.samconfig prod stack_name`` prints one value.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Any

SAMCONFIG = Path(__file__).resolve().parents[1] / "samconfig.toml"


class SamConfigError(LookupError):
    """The environment or the key is not in samconfig.toml; the message says which."""


def value(env: str, key: str, path: Path = SAMCONFIG) -> str:
    config: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    if env not in config:
        known = ", ".join(sorted(k for k in config if isinstance(config[k], dict)))
        raise SamConfigError(f"environment {env!r} is not in {path.name} (it has: {known})")
    for command in ("deploy", "global"):
        found = config[env].get(command, {}).get("parameters", {}).get(key)
        if found:
            return str(found)
    raise SamConfigError(f"{path.name} has no {key} for environment {env!r}")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m devstack.samconfig <env> <key>", file=sys.stderr)
        return 2
    try:
        print(value(argv[0], argv[1]))
    except SamConfigError as exc:
        print(f"samconfig: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
