"""The layer's shape holds: imports run one way between the wings, and each function loads only what it uses.

A new module that imports against the grain, or a handler that drags every port in again, fails here rather than in
a cold start paid inside Kommo's 2 s.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "shared"
BRIDGE = LAYER / "bridge"

# Each wing may import the wings listed for it, and nothing else of the layer. runtime.py imports them all.
MAY_IMPORT = {
    "core": set(),
    "store": {"core"},
    "whereby": {"core", "store"},
    "kommo": {"core", "store", "whereby"},
    "chat": {"core", "store", "whereby"},
}
# A peer's client speaks to its peer; it never reaches into a use-case.
CLIENTS = {"whereby/client.py", "kommo/client.py", "kommo/auth.py", "chat/mattermost_bot.py"}
CLIENT_MAY_IMPORT = {"bridge.core", "bridge.store.credentials"}


def bridge_imports(path: Path) -> set[str]:
    """Every ``bridge.…`` module the file imports, at any depth (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bridge":
            if node.module == "bridge":
                found.update(f"bridge.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "bridge")
    return found


def wing_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_module_of_the_layer_lives_in_a_wing_except_the_ports():
    loose = sorted(p.name for p in BRIDGE.glob("*.py") if p.name not in {"__init__.py", "runtime.py"})
    assert loose == []
    assert {p.name for p in BRIDGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(MAY_IMPORT)


@pytest.mark.parametrize("wing", sorted(MAY_IMPORT))
def test_a_wing_imports_only_the_wings_below_it_and_never_the_ports(wing):
    against_the_grain = {
        f"{path.relative_to(BRIDGE)} imports {module}"
        for path in (BRIDGE / wing).glob("*.py")
        for module in bridge_imports(path)
        if wing_of(module) not in MAY_IMPORT[wing] | {wing}
    }
    assert against_the_grain == set()


def test_a_peer_client_never_imports_a_use_case():
    reaching = {
        f"{name} imports {module}"
        for name in CLIENTS
        for module in bridge_imports(BRIDGE / name)
        if not any(module == allowed or module.startswith(allowed + ".") for allowed in CLIENT_MAY_IMPORT)
    }
    assert reaching == set()


def loaded_by(function: str) -> set[str]:
    """The modules a fresh interpreter holds after importing one handler, as Lambda does on a cold start."""
    code = (
        "import json, sys; "
        f"sys.path[:0] = [{str(LAYER)!r}, {str(ROOT / 'functions' / function)!r}]; "
        "import app; print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout))


@pytest.mark.parametrize("function", ["kommo_stage", "kommo_close"])
def test_the_kommo_intake_loads_no_http_client_no_peer_and_no_powertools_event_classes(function):
    # It authenticates, parses and enqueues: the queue, its secret and its parser are all it needs.
    loaded = loaded_by(function)
    assert "bridge.kommo.intake" in loaded
    heavy = {"requests", "bridge.whereby.client", "bridge.kommo.client", "bridge.kommo.deal_rooms"}
    heavy |= {"bridge.store.meetings", "aws_lambda_powertools.utilities.data_classes"}
    assert heavy & loaded == set()


def test_the_slash_command_loads_no_kommo_wing():
    loaded = loaded_by("mattermost_command")
    assert "bridge.chat.mattermost" in loaded
    assert {m for m in loaded if m.startswith("bridge.kommo")} == set()


def test_the_end_button_route_loads_no_kommo_wing_and_no_bot_client():
    # A click deletes a room at Whereby and answers the post's update: Mattermost's API is never called.
    loaded = loaded_by("mattermost_action")
    assert "bridge.chat.mattermost_action" in loaded
    assert "bridge.chat.mattermost_bot" not in loaded
    assert {m for m in loaded if m.startswith("bridge.kommo")} == set()


def test_the_slack_command_loads_no_http_client_no_whereby_client_and_no_kommo_wing():
    # Slack waits 3 s: the route verifies, parses and enqueues; the room is made in the worker.
    loaded = loaded_by("slack_command")
    assert "bridge.chat.slack" in loaded
    # slack_sdk's package loads its web and webhook clients with the signature verifier (urllib, no requests).
    heavy = {"requests", "bridge.whereby.client", "bridge.chat.slack_worker"}
    assert heavy & loaded == set()
    assert {m for m in loaded if m.startswith("bridge.kommo")} == set()


def test_the_slack_buttons_route_loads_no_http_client_no_whereby_client_and_no_kommo_wing():
    # Slack waits 3 s for a click too: the route verifies, checks the End button's value and enqueues.
    loaded = loaded_by("slack_action")
    assert "bridge.chat.slack_action" in loaded
    heavy = {"requests", "bridge.whereby.client", "bridge.chat.slack_worker", "bridge.chat.slack_bot"}
    assert heavy & loaded == set()
    assert {m for m in loaded if m.startswith("bridge.kommo")} == set()


def test_the_worker_loads_the_whereby_events_path_only_when_an_event_comes():
    # Its cold start carries every Kommo job's code; the events' parsing, notes and recordings wait for an event.
    loaded = loaded_by("worker")
    assert "bridge.kommo.deal_rooms" in loaded
    events_path = {"bridge.whereby.events", "bridge.kommo.meeting_story", "bridge.kommo.recordings"}
    assert events_path & loaded == set()
    assert "bridge.kommo.webhook" not in loaded  # the hooks' parser is the intake's
