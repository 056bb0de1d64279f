"""``template.yaml`` as the single source of truth for the local stack and the tests.

The table, queues and secret are created from the resources' own properties, and each function's routes,
handler and environment are read from it, so what runs locally cannot drift from what ``sam deploy`` creates.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation's short tags (``!Ref X`` → ``{"Ref": "X"}``)."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_CfnLoader)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    function: str


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    code_dir: Path
    handler: str
    timeout: int
    environment: Mapping[str, Any]


@dataclass
class Stack:
    """Physical names of the resources the local stack created, by logical id."""

    refs: dict[str, str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)


def resources_of(template: Mapping[str, Any], kind: str) -> dict[str, Mapping[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def route_pattern(path: str) -> re.Pattern[str]:
    """An HTTP API route path as a pattern: each ``{name}`` matches one path segment, as API Gateway does."""
    parts = re.split(r"\{([A-Za-z0-9_]+)\}", path)
    pattern = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts))
    return re.compile(pattern)


def routes(template: Mapping[str, Any]) -> list[Route]:
    found = []
    for logical_id, resource in resources_of(template, "AWS::Serverless::Function").items():
        for event in resource["Properties"].get("Events", {}).values():
            if event["Type"] == "HttpApi":
                props = event["Properties"]
                found.append(Route(props["Method"].upper(), props["Path"], logical_id))
    return found


def functions(template: Mapping[str, Any]) -> dict[str, FunctionSpec]:
    globals_ = template.get("Globals", {}).get("Function", {})
    specs = {}
    for logical_id, resource in resources_of(template, "AWS::Serverless::Function").items():
        props = resource["Properties"]
        env = dict(globals_.get("Environment", {}).get("Variables", {}))
        env.update(props.get("Environment", {}).get("Variables", {}))
        specs[logical_id] = FunctionSpec(
            logical_id=logical_id,
            code_dir=ROOT / props["CodeUri"],
            handler=props.get("Handler", globals_.get("Handler", "app.lambda_handler")),
            timeout=int(props.get("Timeout", globals_.get("Timeout", 3))),
            environment=env,
        )
    return specs


def _pseudo_parameters() -> dict[str, str]:
    return {
        "AWS::Region": os.environ.get("AWS_DEFAULT_REGION", "eu-west-1"),
        "AWS::URLSuffix": "amazonaws.com",
        "AWS::Partition": "aws",
        "AWS::AccountId": "123456789012",
        "AWS::StackName": "local",
    }


def _substitute(name: str, stack: Stack) -> str:
    pseudo = _pseudo_parameters()
    if name in pseudo:
        return pseudo[name]
    if "." in name:
        logical_id, attribute = name.split(".", 1)
        return stack.attributes[(logical_id, attribute)]
    return stack.parameters[name] if name in stack.parameters else stack.refs[name]


def resolve(value: Any, stack: Stack) -> str:
    """Resolve the intrinsic functions the environment uses: Ref, GetAtt and the string form of Sub."""
    if isinstance(value, Mapping) and isinstance(value.get("Fn::Sub"), str):
        return re.sub(r"\$\{([^}!]+)\}", lambda m: _substitute(m.group(1), stack), value["Fn::Sub"])
    if isinstance(value, Mapping) and "Ref" in value:
        name = value["Ref"]
        if name in stack.parameters:
            return stack.parameters[name]
        return stack.refs[name]
    if isinstance(value, Mapping) and "Fn::GetAtt" in value:
        logical_id, attribute = value["Fn::GetAtt"]
        return stack.attributes[(logical_id, attribute)]
    return str(value)


def environment(spec: FunctionSpec, stack: Stack) -> dict[str, str]:
    return {name: resolve(value, stack) for name, value in spec.environment.items()}


def parameter_defaults(template: Mapping[str, Any], overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    values = {k: str(v.get("Default", "")) for k, v in template.get("Parameters", {}).items()}
    values.update(overrides or {})
    return values


def create_resources(
    template: Mapping[str, Any],
    *,
    dynamodb: Any,
    sqs: Any,
    secretsmanager: Any,
    secret_value: Mapping[str, Any],
    parameters: Mapping[str, str] | None = None,
    prefix: str = "local",
    scheduler: Any = None,
) -> Stack:
    """Create the template's table, queues and secrets with the given boto3 clients (moto or real).

    ``secret_value`` holds every key; each secret gets the keys the template gives it.
    """
    stack = Stack(parameters=parameter_defaults(template, parameters))
    # An HTTP API's id names its URL; locally the gateway stands in for it (LocalStack sets the real local URL).
    for logical_id in resources_of(template, "AWS::Serverless::HttpApi"):
        stack.refs[logical_id] = prefix
    for logical_id, resource in resources_of(template, "AWS::DynamoDB::Table").items():
        props = resource["Properties"]
        name = f"{prefix}-{logical_id}"
        kwargs: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if props.get("GlobalSecondaryIndexes"):
            kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        dynamodb.create_table(**kwargs)
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
        stack.refs[logical_id] = name
    queues = resources_of(template, "AWS::SQS::Queue")
    # Dead-letter queues first: the others name them in their redrive policy.
    ordered = sorted(queues.items(), key=lambda item: "RedrivePolicy" in item[1].get("Properties", {}))
    for logical_id, resource in ordered:
        props = resource.get("Properties", {})
        fifo = bool(props.get("FifoQueue"))
        name = f"{prefix}-{logical_id}" + (".fifo" if fifo else "")
        attributes = {"FifoQueue": "true"} if fifo else {}
        for key in ("VisibilityTimeout", "MessageRetentionPeriod"):
            if key in props:
                attributes[key] = str(props[key])
        if fifo:
            attributes["ContentBasedDeduplication"] = str(bool(props.get("ContentBasedDeduplication"))).lower()
        if "RedrivePolicy" in props:
            policy = props["RedrivePolicy"]
            attributes["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": resolve(policy["deadLetterTargetArn"], stack),
                    "maxReceiveCount": str(policy["maxReceiveCount"]),
                }
            )
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        stack.refs[logical_id] = url
        stack.attributes[(logical_id, "Arn")] = arn
        stack.attributes[(logical_id, "QueueName")] = name
    for logical_id, resource in resources_of(template, "AWS::SecretsManager::Secret").items():
        name = f"{prefix}-{logical_id}"
        keys = secret_keys(resource)
        value = {key: secret_value[key] for key in keys if key in secret_value}
        arn = secretsmanager.create_secret(Name=name, SecretString=json.dumps(value))["ARN"]
        stack.refs[logical_id] = arn
    # The recurring meetings' Scheduler group (made when a scheduler client is given), the role the Scheduler invokes
    # with and the functions' ARNs, as the functions' environment names them.
    pseudo = _pseudo_parameters()
    account, region = pseudo["AWS::AccountId"], pseudo["AWS::Region"]
    for logical_id in resources_of(template, "AWS::Scheduler::ScheduleGroup"):
        name = f"{prefix}-{logical_id}"
        if scheduler is not None:
            scheduler.create_schedule_group(Name=name)
        stack.refs[logical_id] = name
    for logical_id in resources_of(template, "AWS::IAM::Role"):
        stack.attributes[(logical_id, "Arn")] = f"arn:aws:iam::{account}:role/{prefix}-{logical_id}"
    for logical_id in resources_of(template, "AWS::Serverless::Function"):
        stack.attributes[(logical_id, "Arn")] = f"arn:aws:lambda:{region}:{account}:function:{prefix}-{logical_id}"
    return stack


def secret_keys(resource: Mapping[str, Any]) -> list[str]:
    """The keys a secret of the template is created with: its literal or generated JSON and its generated key."""
    props = resource.get("Properties", {})
    generate = props.get("GenerateSecretString") or {}
    literal = props.get("SecretString") or generate.get("SecretStringTemplate") or "{}"
    keys = list(json.loads(literal))
    if generate.get("GenerateStringKey"):
        keys.append(generate["GenerateStringKey"])
    return keys


def redrive_policy(template: Mapping[str, Any], queue_logical_id: str) -> tuple[str, int]:
    """The dead-letter queue and receive count a queue's redrive policy names."""
    policy = template["Resources"][queue_logical_id]["Properties"]["RedrivePolicy"]
    return policy["deadLetterTargetArn"]["Fn::GetAtt"][0], int(policy["maxReceiveCount"])
