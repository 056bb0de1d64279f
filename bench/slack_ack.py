"""How fast ``/whereby`` is acknowledged on the local stack: Slack's route (must answer within 3 s) against the
Mattermost route in the same run, both over real HTTP through the local gateway.

Slack: the simulator signs each command and the time is until the bridge's 200 ("Making your Whereby room…"); the
room itself comes later through ``response_url``. Mattermost: the time is until its 200, which carries the room (it
calls Whereby inside the request). ``--samples`` of each (100 or more gives a p99; fewer reports the max).

    python -m bench.slack_ack --samples 120
"""

from __future__ import annotations

import argparse
import time
from urllib.parse import urlencode

import requests

from bench.stats import median, tail
from devstack.local import LOCAL_SECRET, LocalConfig, LocalStack


def measure(samples: int) -> dict[str, list[float]]:
    # No shared points budget: every command makes its room, so both routes do their whole work.
    config = LocalConfig(
        port=0,
        sweeper=False,
        access_log=False,
        metrics=False,
        log_level="ERROR",
        extra_parameters={"WherebyPointsPerMinute": "0"},
    )
    times: dict[str, list[float]] = {"slack": [], "mattermost": []}
    with LocalStack(config, log=lambda line: None) as stack:
        assert stack.slack_sim is not None
        team = next(iter(LOCAL_SECRET["mattermost_tokens"]))
        for index in range(samples):
            answer = stack.slack_sim.command(f"{stack.gateway_url}/slack/command", f"Bench {index} 30m")
            assert answer.status == 200, answer
            times["slack"].append(answer.seconds)
            body = urlencode(
                {
                    "token": stack.mattermost_token,
                    "team_id": team,
                    "channel_id": "bench0channel0000000000000",
                    "user_id": "bench0user000000000000000a",
                    "command": "/whereby",
                    "text": f"Bench {index} 30m",
                }
            )
            started = time.perf_counter()
            reply = requests.post(
                f"{stack.gateway_url}/mattermost/command",
                data=body,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=30,
            )
            times["mattermost"].append(time.perf_counter() - started)
            assert reply.status_code == 200, reply.text
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=120)
    args = parser.parse_args()
    times = measure(args.samples)
    print(f"/whereby acknowledgement on the local stack, {args.samples} commands each (ms):")
    for name, seconds in times.items():
        label, value = tail(seconds)
        print(f"  {name:<11} median {median(seconds) * 1000:6.1f}  {label} {value * 1000:6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
