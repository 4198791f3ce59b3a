"""deploy/template.yaml passes cfn-lint (inside `make test`), and keeps the promises the code relies on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from bulkchange.aws.metrics import count_refused

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags (!Ref, !Sub, …) as plain values."""


def _any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return {suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {suffix: loader.construct_sequence(node, deep=True)}
    return {suffix: loader.construct_mapping(node, deep=True)}  # type: ignore[arg-type]


_CfnLoader.add_multi_constructor("!", _any_tag)


def _template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)


def test_cfn_lint_passes() -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run([str(cfn_lint), str(TEMPLATE)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_queue_function_and_event_source_fit_together() -> None:
    template = _template()
    resources = template["Resources"]
    queue = resources["DeviceBulkChangeQueue"]["Properties"]
    function = resources["DeviceBulkChangeFunction"]["Properties"]
    mapping = resources["DeviceBulkChangeEventSource"]["Properties"]
    # The visibility timeout is 6 x the function timeout, whichever timeout is chosen.
    visibility = {"FindInMap": ["VisibilityTimeouts", {"Ref": "FunctionTimeout"}, "Seconds"]}
    assert queue["VisibilityTimeout"] == visibility and function["Timeout"] == {"Ref": "FunctionTimeout"}
    allowed = template["Parameters"]["FunctionTimeout"]["AllowedValues"]
    table = template["Mappings"]["VisibilityTimeouts"]
    assert {int(k): v["Seconds"] for k, v in table.items()} == {t: 6 * t for t in allowed}
    assert max(allowed) <= 900  # Lambda's limit
    assert queue["RedrivePolicy"]["maxReceiveCount"] == 5
    assert "FifoQueue" not in queue  # per-message DelaySeconds needs a standard queue
    assert function["Handler"] == "bulkchange.aws.lambda_handler.handler"
    assert resources["CallbackFunction"]["Properties"]["Handler"] == "bulkchange.aws.callback_handler.handler"
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert "MaximumConcurrency" in mapping["ScalingConfig"]
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["BULKCHANGE_QUEUE_VISIBILITY_TIMEOUT_S"] == visibility
    assert env["BULKCHANGE_LAMBDA_FUNCTION_TIMEOUT_S"] == {"Ref": "FunctionTimeout"}
    assert env["BULKCHANGE_SLICE_MAX_SECONDS"] == {"Ref": "SliceSeconds"}
    assert {"DEVICE_BULK_CHANGE_QUEUE_URL", "THINGSPACE_UPDATE_DEVICE_STATUS_RETRY_NUMBER"} <= set(env)
    # Credentials are encrypted at rest: every function shares the key list, read by SSM reference (a
    # function has no writable ./var to generate a key file into).
    assert env["BULKCHANGE_SECRET_KEYS"] == {"Sub": "ssm:${SecretKeysParameterName}"}


def test_the_default_sizing_starts_a_whole_batch_within_the_function_timeout() -> None:
    """deploy/README.md's arithmetic on the defaults: a record starts only while a slice fits before the
    timeout less the cutoff, so BatchSize full-length slices must fit there (a measured record is far
    shorter: docs/benchmarks.md)."""
    template = _template()
    params = template["Parameters"]
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    timeout, slice_s = params["FunctionTimeout"]["Default"], params["SliceSeconds"]["Default"]
    cutoff = float(env["BULKCHANGE_LAMBDA_TIME_CUTOFF_S"])
    assert slice_s < timeout - cutoff
    assert {"BatchSize", "MaximumConcurrency", "MaximumBatchingWindow", "SliceSeconds"} <= set(params)
    mapping = template["Resources"]["DeviceBulkChangeEventSource"]["Properties"]
    assert mapping["BatchSize"] == {"Ref": "BatchSize"}
    assert mapping["MaximumBatchingWindowInSeconds"] == {"Ref": "MaximumBatchingWindow"}


def _statements(policies: list[Any]) -> list[dict[str, Any]]:
    return [statement for policy in policies for statement in policy["Statement"] if "Sid" in statement]


def _actions(statements: list[dict[str, Any]], resource: dict[str, Any]) -> set[str]:
    return {
        action
        for statement in statements
        if statement["Resource"] == resource
        for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
    }


def test_the_queue_function_may_return_records_it_did_not_start() -> None:
    function = _template()["Resources"]["DeviceBulkChangeFunction"]["Properties"]
    queue_actions = _actions(_statements(function["Policies"]), {"GetAtt": "DeviceBulkChangeQueue.Arn"})
    assert {"sqs:ChangeMessageVisibility", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"} <= queue_actions


def test_a_worker_outside_lambda_has_a_managed_policy_and_the_queue_urls() -> None:
    template = _template()
    policy = template["Resources"]["WorkerPolicy"]
    assert policy["Type"] == "AWS::IAM::ManagedPolicy"
    statements = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if "Sid" in s]
    assert _actions(statements, {"GetAtt": "DeviceBulkChangeQueue.Arn"}) == {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
    }
    assert _actions(statements, {"GetAtt": "DeadLetterQueue.Arn"}) == {"sqs:GetQueueAttributes", "sqs:GetQueueUrl"}
    sids = {s["Sid"] for s in statements}
    assert {"ReadConfiguration", "ReadSecrets"} <= sids
    outputs = template["Outputs"]
    assert outputs["QueueUrl"]["Value"] == {"Ref": "DeviceBulkChangeQueue"}
    assert outputs["DeadLetterQueueUrl"]["Value"] == {"Ref": "DeadLetterQueue"}
    assert outputs["WorkerPolicyArn"]["Value"] == {"Ref": "WorkerPolicy"}


def test_the_refused_messages_alarm_watches_what_the_handler_publishes() -> None:
    template = _template()
    alarm = template["Resources"]["RefusedMessagesAlarm"]["Properties"]
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert alarm["Namespace"] == env["BULKCHANGE_METRICS_NAMESPACE"]
    published: list[str] = []
    count_refused("bulkchange/stack", "malformed", message_id="m-1", write=published.append)
    (document,) = (json.loads(line) for line in published)
    (definition,) = document["_aws"]["CloudWatchMetrics"]
    assert alarm["MetricName"] in {m["Name"] for m in definition["Metrics"]}
    watched = [d["Name"] for d in alarm["Dimensions"]]
    assert watched in definition["Dimensions"]  # the alarm's dimension set is one the line publishes
    assert all(document[d["Name"]] == d["Value"] for d in alarm["Dimensions"])
    assert (alarm["Statistic"], alarm["Threshold"], alarm["ComparisonOperator"]) == ("Sum", 0, "GreaterThanThreshold")
