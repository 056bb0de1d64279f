"""The sweeper's cost against the table's size: records read and time, for 10,000 and 100,000 live rooms, 1% expired.

Baseline in the same run: the naive sweep (a filtered Scan of the table), which reads every record. Records read is
what DynamoDB bills and what grows with the table. Times are moto's in this process, whose index query walks every
item internally, so they understate the difference DynamoDB makes; read them as a floor, not as AWS latency.
"""

from __future__ import annotations

import argparse
import json
import os
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager

import boto3
from boto3.dynamodb.conditions import Attr
from moto import mock_aws

from devstack.template import create_resources, load_template
from devstack.whereby_sim import WherebySimulator

REGION = "eu-west-1"
SECRET = {
    "whereby_api_key": "bench-key",
    "kommo_webhook_token": "t",
    "kommo_access_token": "t",
    "mattermost_tokens": {},
}


@contextmanager
def bench_stack(whereby_url: str) -> Iterator[dict[str, str]]:
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION=REGION,
        POWERTOOLS_LOG_LEVEL="WARNING",
    )
    with mock_aws():
        stack = create_resources(
            load_template(),
            dynamodb=boto3.client("dynamodb", region_name=REGION),
            sqs=boto3.client("sqs", region_name=REGION),
            secretsmanager=boto3.client("secretsmanager", region_name=REGION),
            secret_value=SECRET,
            prefix="bench",
        )
        os.environ.update(
            TABLE_NAME=stack.refs["MeetingsTable"],
            WHEREBY_SECRET_ID=stack.refs["WherebySecret"],
            WHEREBY_BASE_URL=whereby_url,
            SWEEP_MAX_DELETES="100000",
        )
        from bridge import runtime

        runtime.reset()
        yield stack.refs


def fill(table_name: str, size: int, expired_share: float, now: int) -> int:
    from bridge import runtime
    from bridge.store.meetings import Room, lead_owner

    store = runtime.store()
    table = boto3.resource("dynamodb", region_name=REGION).Table(table_name)
    every = round(1 / expired_share)
    expired = 0
    keys: set[str] = set()
    with table.batch_writer() as batch:
        for i in range(size):
            is_expired = i % every == 0
            expired += is_expired
            # Seven random characters: among 100,000 keys two are equal about one run in seven, and the second
            # would overwrite the first.
            key = store.new_room_key()
            while key in keys:
                key = store.new_room_key()
            keys.add(key)
            room = Room(
                room_key=key,
                source="kommo",
                owner=lead_owner("bench", i),
                end_at=now - 60 if is_expired else now + 3600,
                created_at=now - 7200,
                state="active",
                meeting_id=f"m{i}",
            )
            batch.put_item(Item=room.item())
    return expired


def naive_sweep(table_name: str, now: int) -> tuple[int, float]:
    """What a hand-written sweeper does: scan everything, keep what has expired."""
    table = boto3.resource("dynamodb", region_name=REGION).Table(table_name)
    started = time.perf_counter()
    read = 0
    kwargs: dict = {"FilterExpression": Attr("end_at").lte(now) & Attr("state").ne("deleted")}
    while True:
        page = table.scan(**kwargs)
        read += page["ScannedCount"]
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return read, time.perf_counter() - started


def our_find(now: int) -> tuple[int, float]:
    """Finding the expired rooms through the index: the part of a sweep that could grow with the table."""
    from bridge import runtime

    started = time.perf_counter()
    found = sum(1 for _ in runtime.store().expired(now, limit=50))
    return found, time.perf_counter() - started


def our_sweep() -> tuple[int, int, float]:
    from bridge import runtime
    from bridge.whereby.sweeper import sweep

    store = runtime.store()
    scanned: list[int] = []
    query = store.table.query

    def counting(**kwargs):
        answer = query(**kwargs)
        scanned.append(answer["ScannedCount"])
        return answer

    store.table.query = counting
    started = time.perf_counter()
    summary = sweep(store, runtime.whereby(), runtime.settings())
    return sum(scanned), summary.deleted, time.perf_counter() - started


def run(sizes: list[int], expired_share: float) -> list[dict]:
    rows = []
    for size in sizes:
        with WherebySimulator(api_key=SECRET["whereby_api_key"]) as whereby, bench_stack(whereby.base_url) as refs:
            now = int(time.time())
            expired = fill(refs["MeetingsTable"], size, expired_share, now)
            naive_read, naive_seconds = naive_sweep(refs["MeetingsTable"], now)
            _, find_seconds = our_find(now)
            read, deleted, seconds = our_sweep()
            rows.append(
                {
                    "table": size,
                    "expired": expired,
                    "deleted": deleted,
                    "records_read": read,
                    "seconds": round(seconds, 3),
                    "find_seconds": round(find_seconds, 4),
                    "naive_records_read": naive_read,
                    "naive_seconds": round(naive_seconds, 3),
                    "read_ratio": round(read / naive_read, 4),
                }
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--expired-share", type=float, default=0.01)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = run([int(s) for s in args.sizes.split(",")], args.expired_share)
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"sweeper: records read per run, {args.expired_share:.0%} of the live rooms expired")
    print("  (records read is what DynamoDB bills; moto's index query walks every item, so its times are no guide)")
    for row in rows:
        print(
            f"  {row['table']:>7,} rooms: read {row['records_read']:>6,}, found in {row['find_seconds']:.3f} s"
            f" (whole sweep with {row['deleted']:,} deletes: {row['seconds']:.2f} s)"
            f" | naive scan: read {row['naive_records_read']:,}, found in {row['naive_seconds']:.3f} s"
            f" | records read ratio {row['read_ratio']:.4f}, find time ratio {find_ratio(row):.3f}"
        )
    ratios = ", ".join(f"{find_ratio(row):.3f} at {row['table']:,}" for row in rows)
    print(f"  find time ratio (ours / scan, moto's times): {ratios}.")
    note = (
        "moto's index query walks every item of the table, so here finding the expired rooms grows with the table as"
        " a Scan does, and a ratio above 1 means moto's query was slower than its Scan. It says nothing of DynamoDB,"
        " whose Query reads only the matching index entries: the records read ratio is what DynamoDB bills."
    )
    print(textwrap.fill(note, width=116, initial_indent="    ", subsequent_indent="    "))
    return 0


def find_ratio(row: dict) -> float:
    return row["find_seconds"] / row["naive_seconds"]


if __name__ == "__main__":
    raise SystemExit(main())
