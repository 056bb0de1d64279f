"""``python -m devstack`` (``make local``): the whole stack on 127.0.0.1 until Ctrl-C or SIGTERM.

Against the real services instead of the simulators (each independently):

  --whereby-url https://api.whereby.dev/v1       needs WHEREBY_API_KEY (creates real rooms on your plan)
  --kommo-url 'https://{subdomain}.kommo.com'    needs KOMMO_ACCESS_TOKEN and KOMMO_SUBDOMAIN (writes real notes)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import FrameType

from devstack.gateway import DEFAULT_HOST, DEFAULT_PORT
from devstack.local import DEMO_STAGE_RULES, LocalConfig, LocalStack


class UsageError(Exception):
    """A flag or environment variable is missing or malformed; the message says which."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description="Run template.yaml on 127.0.0.1: moto, the Whereby and Kommo simulators, an API gateway,\n"
        "the job queue pumped into the worker, and every schedule (the sweeper, the Kommo reconciliation) on its\n"
        "rate. Ctrl-C stops it.",
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="gateway address (default %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="gateway port, 0 for any (default %(default)s)")
    parser.add_argument("--whereby-url", help="real Whereby API base URL instead of the simulator")
    parser.add_argument("--kommo-url", help="real Kommo base URL instead of the simulator; {subdomain} is filled in")
    parser.add_argument(
        "--sweep-every",
        type=float,
        metavar="SECONDS",
        help="run every schedule (sweeper, Kommo reconciliation) this often, not on its template rate",
    )
    parser.add_argument(
        "--stage-rules",
        metavar="JSON",
        default=json.dumps(DEMO_STAGE_RULES),
        help="the StageRules parameter (default: status 16525558 of the sample webhook opens a Demo room)",
    )
    return parser.parse_args(argv)


def _required(env: Mapping[str, str], name: str, flag: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise UsageError(f"{flag} needs the environment variable {name}")
    return value


def _check_stage_rules(raw: str) -> None:
    from bridge.core.config import ConfigError, parse_stage_rules

    try:
        parse_stage_rules(raw)
    except ConfigError as exc:
        raise UsageError(f"--stage-rules: {exc}") from None


def config_from(args: argparse.Namespace, env: Mapping[str, str]) -> LocalConfig:
    if args.sweep_every is not None and args.sweep_every <= 0:
        raise UsageError("--sweep-every must be a positive number of seconds")
    _check_stage_rules(args.stage_rules)
    config = LocalConfig(
        host=args.host, port=args.port, stage_rules=args.stage_rules, sweep_every=args.sweep_every or None
    )
    if args.whereby_url:
        whereby_key = _required(env, "WHEREBY_API_KEY", "--whereby-url")
        config = replace(config, whereby_url=args.whereby_url, whereby_api_key=whereby_key)
    if args.kommo_url:
        token = _required(env, "KOMMO_ACCESS_TOKEN", "--kommo-url")
        subdomain = _required(env, "KOMMO_SUBDOMAIN", "--kommo-url")
        config = replace(
            config,
            kommo_url=args.kommo_url,
            kommo_access_token=token,
            kommo_subdomain=subdomain,
            kommo_account_id=env.get("KOMMO_ACCOUNT_ID", "").strip(),  # optional second check
        )
    return config


def real_peer_warnings(config: LocalConfig) -> list[str]:
    warnings = []
    if config.whereby_url:
        warnings.append(
            f"WARNING: Whereby is REAL ({config.whereby_url}): every room this stack creates is a real room that "
            "counts against your plan until it is deleted."
        )
    if config.kommo_url:
        warnings.append(
            f"WARNING: Kommo is REAL ({config.kommo_url}, account {config.kommo_subdomain}): the worker writes "
            "notes into real deals."
        )
    return warnings


def main(argv: Sequence[str] | None = None) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # logs appear at once behind a pipe
    try:
        config = config_from(parse_args(argv), os.environ)
    except UsageError as exc:
        print(f"python -m devstack: {exc}", file=sys.stderr)
        return 2
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack = LocalStack(config)
    try:
        stack.start()
    except OSError as exc:
        print(f"python -m devstack: cannot start: {exc} (is --port {config.port} taken?)", file=sys.stderr)
        return 1
    try:
        print(stack.describe())
        for warning in real_peer_warnings(config):
            print(warning)
        while not stopping.wait(0.5):
            pass
        print("Stopping the local stack...")
    finally:
        stack.stop()
    print("Stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
