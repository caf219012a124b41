"""template.yaml: it lints, and it says what the design asks of it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation's short tags as their long ``Fn::`` form."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    document: dict[str, Any] = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CfnLoader)
    return document


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return dict(template["Resources"])


def test_cfn_lint_is_clean() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), str(ROOT / "template.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_functions_on_one_code_base_python_3_13_arm64(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    globals_ = template["Globals"]["Function"]
    assert globals_["Runtime"] in ("python3.12", "python3.13")
    assert globals_["Architectures"] == ["arm64"]
    assert globals_["CodeUri"] == "src/"
    handlers = {
        r["Properties"]["Handler"] for r in resources.values() if r["Type"] == "AWS::Serverless::Function"
    }
    assert handlers == {
        "tiktok_archive.handlers.api.lambda_handler",
        "tiktok_archive.handlers.sqs.lambda_handler",
        "tiktok_archive.handlers.lifecycle.lambda_handler",
        "tiktok_archive.handlers.webhook.lambda_handler",
        "tiktok_archive.handlers.sweeper.lambda_handler",
    }
    for handler in handlers:
        path = ROOT / "src" / (handler.rsplit(".", 1)[0].replace(".", "/") + ".py")
        assert "def lambda_handler" in path.read_text()


def test_bucket_is_encrypted_private_tls_only_and_cleans_up(resources: dict[str, Any]) -> None:
    bucket = resources["ArchiveBucket"]["Properties"]
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    rules = {rule["Id"]: rule for rule in bucket["LifecycleConfiguration"]["Rules"]}
    assert rules["ExpireArchives"]["ExpirationInDays"] == {"Ref": "ArchiveRetentionDays"}
    assert rules["AbortIncompleteMultipartUploads"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 1
    }
    tls, stale = resources["ArchiveBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert tls["Effect"] == stale["Effect"] == "Deny"
    assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    # A presigned link older than the longest TTL is refused (s3:signatureAge is in milliseconds).
    assert stale["Condition"] == {
        "NumericGreaterThan": {"s3:signatureAge": {"Fn::Sub": "${PresignedUrlTtlSeconds}000"}}
    }


def test_queue_has_a_dead_letter_queue_and_six_times_the_worker_timeout(resources: dict[str, Any]) -> None:
    queue = resources["DownloadQueue"]["Properties"]
    worker = resources["WorkerFunction"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * worker["Timeout"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["DownloadDeadLetterQueue", "Arn"]}
    assert queue["RedrivePolicy"]["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
    event = worker["Events"]["Downloads"]["Properties"]
    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_api_requires_a_key_and_throttles_with_a_usage_plan(resources: dict[str, Any]) -> None:
    auth = resources["DownloadsApi"]["Properties"]["Auth"]
    assert auth["ApiKeyRequired"] is True
    assert auth["UsagePlan"]["CreateUsagePlan"] == "PER_API"
    assert set(auth["UsagePlan"]["Throttle"]) == {"RateLimit", "BurstLimit"}
    event = resources["ApiFunction"]["Properties"]["Events"]["CreateDownload"]["Properties"]
    assert (event["Method"], event["Path"], event["Auth"]["ApiKeyRequired"]) == ("POST", "/downloads", True)


def test_iam_is_least_privilege(resources: dict[str, Any]) -> None:
    # Every function's own statements name resources of the template, never "*", and no action has a
    # wildcard; what each function may do is judged call by call in the integration suite
    # (tests/harness/functions.py), which fails on any call no policy allows.
    for name, resource in resources.items():
        if resource["Type"] == "AWS::IAM::ManagedPolicy":
            statements = resource["Properties"]["PolicyDocument"]["Statement"]
        elif resource["Type"] == "AWS::Serverless::Function":
            statements = [
                s for p in resource["Properties"]["Policies"] if "Statement" in p for s in p["Statement"]
            ]
        else:
            continue
        for statement in statements:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert all("*" not in action for action in actions), (name, actions)
            assert statement["Resource"] != "*", name
    # Tokens: the key is used only for the tokens' purposes.
    for name in ("ApiFunction",):
        [encrypt] = [
            s
            for p in resources[name]["Properties"]["Policies"]
            if "Statement" in p
            for s in p["Statement"]
            if s["Action"] == "kms:Encrypt"
        ]
        purposes = encrypt["Condition"]["StringEquals"]["kms:EncryptionContext:purpose"]
        assert set(purposes) == {"tiktok-archive access token", "tiktok-archive refresh token"}
    grants = resources["UserGrantsPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    [kms] = [s for s in grants if s["Sid"] == "SealAndOpenTokens"]
    assert set(kms["Condition"]["StringEquals"]["kms:EncryptionContext:purpose"]) == {
        "tiktok-archive access token",
        "tiktok-archive refresh token",
    }
    [objects] = resources["ArchiveObjectsPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert objects["Resource"] == {"Fn::Sub": "${ArchiveBucket.Arn}/${ObjectKeyPrefix}*"}
    records, events = resources["DownloadRecordsPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert {"Fn::GetAtt": ["DownloadsTable", "Arn"]} in (records["Resource"], *records["Resource"])
    assert events["Action"] == "events:PutEvents"
    assert events["Resource"]["Fn::Sub"].endswith(":event-bus/default")


def test_downloads_table_is_on_demand_recoverable_encrypted_and_expires_with_the_archives(
    resources: dict[str, Any], template: dict[str, Any]
) -> None:
    table = resources["DownloadsTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "request_id", "KeyType": "HASH"}]
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["DOWNLOADS_TABLE_NAME"] == {"Ref": "DownloadsTable"}
    # Records live as long as the archives the bucket's lifecycle keeps.
    assert variables["RECORD_RETENTION_DAYS"] == {"Ref": "ArchiveRetentionDays"}
    assert resources["TokenKey"]["Properties"]["EnableKeyRotation"] is True


def test_api_serves_post_and_get_behind_the_api_key(resources: dict[str, Any]) -> None:
    events = resources["ApiFunction"]["Properties"]["Events"]
    routes = {(e["Properties"]["Method"], e["Properties"]["Path"]) for e in events.values()}
    assert routes == {
        ("POST", "/requests"),
        ("POST", "/downloads"),
        ("GET", "/downloads/{request_id}"),
        ("DELETE", "/downloads/{request_id}"),
    }
    assert all(e["Properties"]["Auth"]["ApiKeyRequired"] for e in events.values())
    variables = resources["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["DOWNLOAD_QUEUE_URL"] == {"Ref": "DownloadQueue"}


def test_every_environment_variable_is_a_literal_a_parameter_or_a_template_resource(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    variables = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    for resource in resources.values():
        variables.update(resource.get("Properties", {}).get("Environment", {}).get("Variables", {}))
    known = set(template["Parameters"]) | set(resources)
    for name, given in variables.items():
        value = given
        if isinstance(given, dict) and "Fn::If" in given:
            # Optional: set from a parameter when given, absent otherwise.
            condition, value, otherwise = given["Fn::If"]
            assert condition in template["Conditions"], name
            assert otherwise == {"Ref": "AWS::NoValue"}, name
        if isinstance(value, dict):
            [(function, argument)] = value.items()
            assert function in ("Ref", "Fn::GetAtt"), name
            target = argument if function == "Ref" else argument[0]
            assert target in known, name
        else:
            assert isinstance(value, str), name
    assert {
        "BUCKET_NAME",
        "TIKTOK_API_BASE_URL",
        "OBJECT_KEY_PREFIX",
        "PART_SIZE_MIB",
        "UPLOAD_CONCURRENCY",
        "PRESIGNED_URL_TTL_SECONDS",
        "TIKTOK_MAX_ATTEMPTS",
        "DEADLINE_MARGIN_SECONDS",
        "S3_RETRY_MODE",
    } <= set(variables)
    assert not any(re.match(r"AWS_ENDPOINT", name) for name in variables)


def test_each_function_has_time_to_notice_a_stall_and_still_stop_before_its_timeout(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    # The work budget is the timeout less the deadline margin; a stall (one read timeout) must fit in it
    # with room to resume, so that Lambda never kills a function in the middle of an upload.
    for name in ("ApiFunction", "WorkerFunction"):
        properties = resources[name]["Properties"]
        variables = properties.get("Environment", {}).get("Variables", {})
        parameter = variables.get("DEADLINE_MARGIN_SECONDS", {"Ref": "DeadlineMarginSeconds"})["Ref"]
        margin = template["Parameters"][parameter]["Default"]
        read_timeout = int(variables.get("TIKTOK_READ_TIMEOUT_SECONDS", 30))
        assert properties["Timeout"] - margin >= 1.5 * read_timeout, name


def test_outputs_name_the_api_the_queue_and_the_bucket(template: dict[str, Any]) -> None:
    assert {"ApiUrl", "DownloadQueueUrl", "ArchiveBucketName", "ApiKeyId"} <= set(template["Outputs"])


@pytest.mark.parametrize("path", sorted((ROOT / "events").glob("*.json")), ids=lambda p: p.name)
def test_sample_events_are_lambda_shaped(path: Path) -> None:
    event = json.loads(path.read_text())
    if path.name.startswith("api-"):
        assert event["httpMethod"] in ("POST", "GET", "DELETE")
        assert event["requestContext"]["requestId"]
    else:
        assert all(r["eventSource"] == "aws:sqs" and r["messageId"] for r in event["Records"])


@pytest.mark.parametrize(
    ("parameter", "accepted", "refused"),
    [
        (
            "PartSizeMiB",
            ["", "5", "8", "64", "999", "1000", "4999", "5000", "5119", "5120"],
            ["4", "0", "5121", "6000", "08"],
        ),
        ("UploadConcurrency", ["", "1", "9", "10", "29", "32"], ["0", "33", "100", "04"]),
    ],
)
def test_optional_tuning_parameters_accept_exactly_the_functions_range(
    template: dict[str, Any], parameter: str, accepted: list[str], refused: list[str]
) -> None:
    pattern = re.compile(template["Parameters"][parameter]["AllowedPattern"])
    assert [value for value in accepted if not pattern.fullmatch(value)] == []
    assert [value for value in refused if pattern.fullmatch(value)] == []


def test_every_skipped_checkov_check_says_why() -> None:
    # `make validate` runs checkov with .checkov.yaml; a skip without its reason is not allowed.
    lines = (ROOT / ".checkov.yaml").read_text().splitlines()
    skips = [line for line in lines if re.match(r"\s*- CKV_", line)]
    assert skips
    for line in skips:
        check, _, reason = line.partition("#")
        assert re.fullmatch(r"\s*- CKV_AWS_[0-9]+\s*", check), line
        assert len(reason.strip()) > 40, f"no reason given: {line}"
