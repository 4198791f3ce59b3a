"""deploy/template.yaml passes cfn-lint (inside `make test`), and keeps the promises the code relies on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

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
    resources = _template()["Resources"]
    queue = resources["DeviceBulkChangeQueue"]["Properties"]
    function = resources["DeviceBulkChangeFunction"]["Properties"]
    mapping = resources["DeviceBulkChangeEventSource"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * function["Timeout"]
    assert queue["RedrivePolicy"]["maxReceiveCount"] == 5
    assert "FifoQueue" not in queue  # per-message DelaySeconds needs a standard queue
    assert function["Handler"] == "bulkchange.aws.lambda_handler.handler"
    assert resources["CallbackFunction"]["Properties"]["Handler"] == "bulkchange.aws.callback_handler.handler"
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert "MaximumConcurrency" in mapping["ScalingConfig"]
    env = _template()["Globals"]["Function"]["Environment"]["Variables"]
    assert env["BULKCHANGE_QUEUE_VISIBILITY_TIMEOUT_S"] == str(queue["VisibilityTimeout"])
    assert {"DEVICE_BULK_CHANGE_QUEUE_URL", "THINGSPACE_UPDATE_DEVICE_STATUS_RETRY_NUMBER"} <= set(env)
    # Credentials are encrypted at rest: every function shares the key list, read by SSM reference (a
    # function has no writable ./var to generate a key file into).
    assert env["BULKCHANGE_SECRET_KEYS"] == {"Sub": "ssm:${SecretKeysParameterName}"}
