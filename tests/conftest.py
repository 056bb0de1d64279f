"""Shared fixtures: AWS from moto (resources made from template.yaml), peers as simulator servers on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from hypothesis import HealthCheck, settings
from moto import mock_aws

from devstack.harness import LocalFunctions
from devstack.kommo_sim import KommoSimulator
from devstack.mattermost_sim import MattermostSimulator
from devstack.slack_sim import SlackSimulator
from devstack.template import create_resources, load_template
from devstack.whereby_sim import WherebySimulator

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "contracts" / "samples"
KOMMO_SAMPLES = SAMPLES / "kommo"
MATTERMOST_SAMPLES = SAMPLES / "mattermost"
SLACK_SAMPLES = SAMPLES / "slack"

# Values of the test secret. Tests assert none of them ever reaches a log line or a response.
SECRET = {
    "whereby_api_key": "wb-key-7f3a9c1e55d04b2c",
    "kommo_webhook_token": "kommo-hook-token-4e8d2b",
    "kommo_access_token": "kommo-access-token-91c7aa",
    # The secret the Whereby samples are signed with (contracts/whereby-events.md §5).
    "whereby_webhook_secret": "whsec_test_123",
    # Each /whereby token is bound to its team: the teams of the three Mattermost samples.
    "mattermost_tokens": {
        "wx4zz8t4ttgmtxqiwfohijayzc": ["mm-token-current-0d9f", "mm-token-next-6b21"],
        "tsb8crrn5tgqtedpkt81b4tcya": ["mm-token-team-tsb8-5e1c"],
        "oybxpfkcrtgk9bz5qbbsccwmxw": ["mm-token-team-oybx-a4f7"],
    },
    # The workspace of the Slack samples and the secret they are signed with (contracts/slack.md §2).
    "slack_signing_secret": {"T0A1B2C3D4E": "8f742231b10e8888abcd99yyyzzz85a5"},
    # Signs the chat End buttons (generated on AWS).
    "action_signing_key": "action-key-3c9f0e1b7a5d42e8b6c1f0a9d8e7c6b5",
}
# The Mattermost bot's token (ChatBotSecret): tests that want a bot put it into the secret with the server's address.
MATTERMOST_BOT_TOKEN = "mm-bot-token-3c7e91d2a4"
MATTERMOST_TOKENS: list[str] = [token for tokens in SECRET["mattermost_tokens"].values() for token in tokens]
SUBDOMAIN = "irestoremoldova"  # the account of the 2021 sample
DEMO_STATUS = 16525558  # the status the 2021 sample moves its lead into
STAGE_RULES = {str(DEMO_STATUS): {"name": "Demo", "duration_minutes": 60, "prefix": "demo", "locked": True}}


# Hypothesis: in CI every run tries the same examples (derandomize: the seed comes from each test's code), so a red
# build is red again when run again, and a failure prints the blob that replays it (docs/testing.md). On a
# developer's machine each run explores new examples, and a failure is kept in .hypothesis/ and tried first next time.
# A test's own @settings still apply on top of the profile. Both start from Hypothesis' defaults, not from whatever
# profile is loaded (Hypothesis loads a "ci" of its own when it sees CI set).
settings.register_profile(
    "ci",
    settings.get_profile("default"),
    derandomize=True,
    print_blob=True,
    database=None,
    deadline=None,  # a shared CI machine's pauses are not the code's
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", settings.get_profile("default"), print_blob=True)
# make mutation runs the tests once per mutant: few examples, and the same ones each time, so that a mutant's verdict
# does not depend on the draw (docs/testing.md). Picked with --hypothesis-profile=mutation.
settings.register_profile(
    "mutation",
    settings.get_profile("ci"),
    max_examples=10,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("ci" if os.environ.get("CI", "").lower() not in ("", "0", "false") else "dev")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--reliability-size", type=int, default=24, help="deals per reliability round (CI: 24)")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """The seed of the random order, at the end of every run: pytest-randomly names it only in the header, which
    ``-q`` (make test, CI) leaves out."""
    seed = getattr(config.option, "randomly_seed", None)
    if seed is not None and config.getoption("randomly_reorganize", True):
        terminalreporter.write_line(
            f"Random test order, seed {seed}: add --randomly-seed={seed} to the same command to run this order again"
        )


@pytest.fixture
def reliability_size(request: pytest.FixtureRequest) -> int:
    return request.config.getoption("--reliability-size")


def sample(name: str) -> bytes:
    return (KOMMO_SAMPLES / name).read_bytes()


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "WherebyBridgeTest")
    monkeypatch.setenv("POWERTOOLS_DEV", "false")


@pytest.fixture
def whereby_sim() -> Iterator[WherebySimulator]:
    with WherebySimulator(api_key=SECRET["whereby_api_key"]) as sim:
        yield sim


@pytest.fixture
def kommo_sim() -> Iterator[KommoSimulator]:
    with KommoSimulator(access_token=SECRET["kommo_access_token"], rate_limit_per_second=50) as sim:
        yield sim


@pytest.fixture
def slack_sim() -> Iterator[SlackSimulator]:
    """Slack's side: it takes the response_url posts (tests sign the commands themselves)."""
    with SlackSimulator("8f742231b10e8888abcd99yyyzzz85a5", "T0A1B2C3D4E") as sim:
        yield sim


@pytest.fixture
def mattermost_sim() -> Iterator[MattermostSimulator]:
    """Mattermost's side: the bot's API, the commands' response_url and the End button's clicks."""
    with MattermostSimulator(bot_token=MATTERMOST_BOT_TOKEN) as sim:
        yield sim


@pytest.fixture
def template() -> dict:
    return load_template()


@pytest.fixture
def stack(
    template: dict,
    whereby_sim: WherebySimulator,
    kommo_sim: KommoSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[LocalFunctions]:
    """The whole template in moto, its functions runnable in-process, peers pointed at the simulators."""
    from bridge.core.observability import metrics

    # The package's one Metrics object outlives a test: counts added outside a handler's flush in an earlier test
    # would otherwise be printed by this test's first invocation and added to its figures.
    metrics.clear_metrics()
    with mock_aws():
        region = "eu-west-1"
        sqs = boto3.client("sqs", region_name=region)
        created = create_resources(
            template,
            dynamodb=boto3.client("dynamodb", region_name=region),
            sqs=sqs,
            secretsmanager=boto3.client("secretsmanager", region_name=region),
            scheduler=boto3.client("scheduler", region_name=region),
            secret_value=SECRET,
            parameters={
                "KommoSubdomain": SUBDOMAIN,
                "KommoAccountId": "16503244",
                "StageRules": json.dumps(STAGE_RULES),
                "WherebyBaseUrl": whereby_sim.base_url,
                "KommoBaseUrl": kommo_sim.base_url,
                # Counted like in production but never binding; the budget's own tests set theirs.
                "WherebyPointsPerMinute": "100000",
            },
        )
        functions = LocalFunctions(template, created, sqs)
        saved = dict(os.environ)
        environment = {**functions.environment(), "SECRET_MAX_AGE_SECONDS": "0"}
        # Through monkeypatch as well: a test's own monkeypatch.setenv of one of these is undone after this fixture
        # ends, and would otherwise put the stack's value back into the environment of the tests that follow.
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        functions.apply_environment(environment)
        try:
            yield functions
        finally:
            os.environ.clear()
            os.environ.update(saved)
            from bridge import runtime

            runtime.reset()


@pytest.fixture
def log_lines(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]):
    """Every line the package logged (Powertools writes JSON lines to stdout), read when called."""

    # A record's extra fields (Powertools' ``extra={...}``) are where ids and reasons go: read them too, since the
    # JSON line Powertools prints may go to a stream captured before this test's.
    standard = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def extras(record: logging.LogRecord) -> str:
        return json.dumps({k: v for k, v in record.__dict__.items() if k not in standard}, default=str)

    def read() -> list[str]:
        out = capsys.readouterr()
        records = [line for r in caplog.records for line in (r.getMessage(), extras(r))]
        return [*out.out.splitlines(), *out.err.splitlines(), *records]

    caplog.set_level(logging.INFO)  # botocore DEBUG dumps raw bodies; Lambda never runs it at that level
    return read


@pytest.fixture
def atomic_dynamodb(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make each DynamoDB request atomic, as the real service is; moto checks conditions and writes without a lock,
    so concurrent conditional writes in threads could both pass there and nowhere else."""
    import threading

    from botocore.client import BaseClient

    lock = threading.Lock()
    original = BaseClient._make_api_call

    def atomic(self, operation_name, api_params):
        if self.meta.service_model.service_name != "dynamodb":
            return original(self, operation_name, api_params)
        with lock:
            return original(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", atomic)
