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


def _of_type(resources: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


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
        "tiktok_archive.handlers.worker.lambda_handler",
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


def test_api_is_signed_with_sigv4_and_has_no_api_key(resources: dict[str, Any]) -> None:
    api = resources["DownloadsApi"]["Properties"]
    auth = api["Auth"]
    # Backends sign their calls (SigV4): API Gateway verifies the signature and the caller's permission.
    assert auth["DefaultAuthorizer"] == "AWS_IAM"
    # API Gateway invokes the functions itself (their resource policy), not with the caller's credentials.
    assert auth["InvokeRole"] == "NONE"
    # No API key and no usage plan: keys are for usage plans, not authentication; the stage throttles.
    assert "ApiKeyRequired" not in auth
    assert "UsagePlan" not in auth
    assert not _of_type(resources, "AWS::ApiGateway::ApiKey")
    assert not _of_type(resources, "AWS::ApiGateway::UsagePlan")
    for function in ("ApiFunction", "WebhookFunction"):
        for event in resources[function]["Properties"]["Events"].values():
            assert "ApiKeyRequired" not in event["Properties"].get("Auth", {}), function
    # Only TikTok's webhook is open (its HMAC signature is checked by the function).
    (webhook,) = resources["WebhookFunction"]["Properties"]["Events"].values()
    assert webhook["Properties"]["Auth"] == {"Authorizer": "NONE"}
    api_events = resources["ApiFunction"]["Properties"]["Events"].values()
    assert all("Auth" not in e["Properties"] for e in api_events)  # the default: AWS_IAM


def test_the_api_resource_policy_admits_the_configured_callers(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    parameter = template["Parameters"]["CallerRoleArns"]
    # A String the template splits: the SAM transform writes a CommaDelimitedList's value into the
    # resource policy as one string ("arnA,arnB"), which would be one principal that matches nobody.
    assert parameter["Type"] == "String"
    assert parameter["Default"] == ""  # any principal of the account holding execute-api:Invoke
    pattern = re.compile(parameter["AllowedPattern"])
    assert pattern.fullmatch("arn:aws:iam::123456789012:role/Backend,arn:aws:iam::123456789012:user/ops")
    assert not pattern.fullmatch("arn:aws:iam::123456789012:role/Backend, arn:aws:iam::123456789012:role/X")
    assert not pattern.fullmatch("arn:aws:sts::123456789012:assumed-role/Backend/session")
    assert template["Conditions"]["HasCallerRoles"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "CallerRoleArns"}, ""]}]
    }
    split = {"Fn::Split": [",", {"Ref": "CallerRoleArns"}]}
    policy = resources["DownloadsApi"]["Properties"]["Auth"]["ResourcePolicy"]
    webhook, callers, deny = policy["CustomStatements"]
    assert webhook == {
        "Effect": "Allow",
        "Principal": "*",
        "Action": "execute-api:Invoke",
        "Resource": "execute-api:/*/POST/webhooks/tiktok",
    }
    assert callers["Effect"] == "Allow"
    assert callers["Principal"]["AWS"] == {
        "Fn::If": [
            "HasCallerRoles",
            split,
            {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"},
        ]
    }
    condition, statement, otherwise = deny["Fn::If"]
    assert (condition, otherwise) == ("HasCallerRoles", {"Ref": "AWS::NoValue"})
    assert statement["Effect"] == "Deny"
    assert statement["Principal"] == "*"
    assert statement["Condition"] == {"StringNotLike": {"aws:PrincipalArn": split}}
    # Every backend route is denied to the others; the webhook route is not among them.
    routes = {
        (e["Properties"]["Method"], e["Properties"]["Path"])
        for e in resources["ApiFunction"]["Properties"]["Events"].values()
    }
    denied = set(statement["Resource"])
    for method, path in routes:
        resource = "execute-api:/*/" + method + re.sub(r"/\{[^}]+\}.*$", "/*", path)
        assert resource in denied, (method, path)
    assert not any("webhooks" in resource for resource in denied)


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
    # Tokens: only the functions that act for a user hold them, through UserGrantsPolicy, whose key use is
    # limited to the tokens' purposes; no function's own statements touch the key.
    holders = {
        name
        for name, resource in _of_type(resources, "AWS::Serverless::Function").items()
        if {"Ref": "UserGrantsPolicy"} in resource["Properties"].get("Policies", [])
    }
    assert holders == {"ApiFunction", "WorkerFunction", "LifecycleFunction"}
    for name, resource in _of_type(resources, "AWS::Serverless::Function").items():
        policies = resource["Properties"].get("Policies", [])
        own = [s for p in policies if "Statement" in p for s in p["Statement"]]
        assert "kms:" not in json.dumps(own), name
    # The API function: the records, the grants (a handed refresh token is exchanged at once and
    # remembered), and the two queues (async downloads; erasures and checks).
    api_own = {
        s["Sid"]: s
        for p in resources["ApiFunction"]["Properties"]["Policies"]
        if "Statement" in p
        for s in p["Statement"]
    }
    assert api_own["HandedTokens"]["Action"] == "dynamodb:PutItem"
    assert api_own["HandedTokens"]["Resource"] == {"Fn::GetAtt": ["GrantsTable", "Arn"]}
    assert api_own["QueueJobsAndChecks"]["Action"] == "sqs:SendMessage"
    assert api_own["QueueJobsAndChecks"]["Resource"] == [
        {"Fn::GetAtt": ["DownloadQueue", "Arn"]},
        {"Fn::GetAtt": ["LifecycleQueue", "Arn"]},
    ]
    managed = [p["Ref"] for p in resources["ApiFunction"]["Properties"]["Policies"] if "Ref" in p]
    assert managed == [
        "ArchiveObjectsPolicy",
        "DownloadRecordsPolicy",
        "UserGrantsPolicy",
        "TikTokQuotaPolicy",
    ]
    grants = resources["UserGrantsPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    [kms] = [s for s in grants if s["Sid"] == "SealAndOpenTokens"]
    assert set(kms["Condition"]["StringEquals"]["kms:EncryptionContext:purpose"]) == {
        "tiktok-archive access token",
        "tiktok-archive refresh token",
    }
    objects, uploads = resources["ArchiveObjectsPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert objects["Resource"] == {"Fn::Sub": "${ArchiveBucket.Arn}/${ObjectKeyPrefix}*"}
    # Open uploads are listed (to be aborted) on the bucket; the list names no object.
    assert uploads["Action"] == "s3:ListBucketMultipartUploads"
    assert uploads["Resource"] == {"Fn::GetAtt": ["ArchiveBucket", "Arn"]}
    records, callers, events = resources["DownloadRecordsPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert {"Fn::GetAtt": ["DownloadsTable", "Arn"]} in (records["Resource"], *records["Resource"])
    # A caller's records of a user, by their index only.
    assert callers["Action"] == "dynamodb:Query"
    assert callers["Resource"] == {"Fn::Sub": "${DownloadsTable.Arn}/index/by-caller-user"}
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


def test_exactly_the_functions_that_call_tiktok_draw_from_its_shared_quota(
    resources: dict[str, Any], template: dict[str, Any]
) -> None:
    table = resources["TikTokQuotaTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "window", "KeyType": "HASH"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    [count] = resources["TikTokQuotaPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert count["Action"] == "dynamodb:UpdateItem"
    assert count["Resource"] == {"Fn::GetAtt": ["TikTokQuotaTable", "Arn"]}
    assert "TIKTOK_QUOTA_TABLE_NAME" not in template["Globals"]["Function"]["Environment"]["Variables"]
    callers = {"ApiFunction", "WorkerFunction", "LifecycleFunction"}
    for name, resource in _of_type(resources, "AWS::Serverless::Function").items():
        properties = resource["Properties"]
        variables = properties["Environment"]["Variables"]
        holds = {"Ref": "TikTokQuotaPolicy"} in properties.get("Policies", [])
        assert holds == (name in callers), name
        if name in callers:
            assert variables["TIKTOK_QUOTA_TABLE_NAME"] == {"Ref": "TikTokQuotaTable"}
            assert variables["TIKTOK_CALLS_PER_MINUTE"] == {"Ref": "TikTokCallsPerMinute"}
            assert variables["TIKTOK_QUOTA_SHARE_PERCENT"] == {"Ref": "TikTokQuotaSharePercent"}
        else:
            assert "TIKTOK_QUOTA_TABLE_NAME" not in variables, name
    assert template["Parameters"]["TikTokCallsPerMinute"]["Default"] == 1000


def test_api_function_serves_the_backends_routes(resources: dict[str, Any]) -> None:
    events = resources["ApiFunction"]["Properties"]["Events"]
    routes = {(e["Properties"]["Method"], e["Properties"]["Path"]) for e in events.values()}
    assert routes == {
        ("POST", "/requests"),
        ("POST", "/downloads"),
        ("GET", "/downloads/{request_id}"),
        ("DELETE", "/downloads/{request_id}"),
        ("GET", "/users/{open_id}/requests"),
        ("DELETE", "/users/{open_id}"),
    }
    assert all(e["Properties"]["RestApiId"] == {"Ref": "DownloadsApi"} for e in events.values())
    variables = resources["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["DOWNLOAD_QUEUE_URL"] == {"Ref": "DownloadQueue"}
    # DELETE /users/{open_id} queues the erasure; a handed refresh token is exchanged at once.
    assert variables["LIFECYCLE_QUEUE_URL"] == {"Ref": "LifecycleQueue"}
    assert variables["GRANTS_TABLE_NAME"] == {"Ref": "GrantsTable"}
    assert variables["TIKTOK_APP_SECRET_ARN"] == {"Ref": "TikTokAppSecret"}


def test_the_indexes_find_a_callers_and_every_callers_records_of_a_user(resources: dict[str, Any]) -> None:
    def indexes(table: str) -> dict[str, Any]:
        properties = resources[table]["Properties"]
        attributes = {a["AttributeName"]: a["AttributeType"] for a in properties["AttributeDefinitions"]}
        found = {}
        for index in properties["GlobalSecondaryIndexes"]:
            keys = [(k["AttributeName"], k["KeyType"]) for k in index["KeySchema"]]
            assert all(attributes[name] == "S" for name, _ in keys), index["IndexName"]
            assert index["Projection"] == {"ProjectionType": "ALL"}, index["IndexName"]
            found[index["IndexName"]] = keys
        # Every defined attribute is a key of the table or of an index (CloudFormation refuses others).
        used = {name for keys in found.values() for name, _ in keys}
        used |= {k["AttributeName"] for k in properties["KeySchema"]}
        assert used == set(attributes), table
        return found

    downloads = indexes("DownloadsTable")
    # GET /users/{open_id}/requests, newest first; the erasure of a caller's user.
    assert downloads["by-caller-user"] == [("caller_user", "HASH"), ("created_at", "RANGE")]
    # authorization.removed: every caller's records of the user.
    assert downloads["by-user"] == [("user_openid", "HASH")]
    assert downloads["by-schedule"] == [("schedule_bucket", "HASH"), ("next_check_at", "RANGE")]
    # Every caller's grant of a user: what authorization.removed erases.
    assert indexes("GrantsTable") == {"by-user": [("user_openid", "HASH")]}


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
    assert {"ApiUrl", "DownloadQueueUrl", "ArchiveBucketName", "WebhookUrl"} <= set(template["Outputs"])
    assert "ApiKeyId" not in template["Outputs"]  # no API key: backends sign with SigV4


@pytest.mark.parametrize("path", sorted((ROOT / "events").glob("*.json")), ids=lambda p: p.name)
def test_sample_events_are_lambda_shaped(path: Path) -> None:
    event = json.loads(path.read_text())
    if path.name.startswith("api-"):
        assert event["httpMethod"] in ("POST", "GET", "DELETE")
        assert event["requestContext"]["requestId"]
        assert event["requestContext"]["stage"] == "v1"
        identity = event["requestContext"]["identity"]
        if event["resource"] == "/webhooks/tiktok":
            # TikTok's webhook is open: no SigV4, so API Gateway hands over no caller.
            assert "Authorization" not in event["headers"]
            assert not identity.get("userArn")
        else:
            # A backend's signed call, as API Gateway hands it over: the SigV4 headers and the caller.
            assert event["headers"]["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=")
            assert "/execute-api/aws4_request" in event["headers"]["Authorization"]
            assert event["headers"]["X-Amz-Date"]
            assert identity["userArn"].startswith("arn:aws:sts::123456789012:assumed-role/")
            assert identity["accountId"] == "123456789012"
            assert "Bearer" not in json.dumps(event)  # the user's token travels in the body
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
