"""The harness's template resolver and IAM evaluator, against the real template.yaml and small policies."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.harness.cfn_template import (
    NO_VALUE,
    LocalResources,
    Template,
    TemplateError,
    load_document,
)
from tests.harness.iam_policy import (
    ORIGIN_KEY,
    AwsCall,
    PolicyError,
    Requirement,
    UnknownOperation,
    evaluate,
    required_permissions,
    resource_matches,
    unused_permissions,
    wildcard_match,
)

REGION = "eu-west-1"
ACCOUNT = "123456789012"
QUEUE_URL = f"http://127.0.0.1:4566/{ACCOUNT}/downloads-abc"
KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{KEY_ID}"
PURPOSE = "tiktok-archive access token"


@pytest.fixture(scope="module")
def template() -> Template:
    return Template.load()


SECRET_ARN = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:tiktokappsecret-abc-AbCdEf"


@pytest.fixture(scope="module")
def local() -> LocalResources:
    return (
        LocalResources(region=REGION, account_id=ACCOUNT)
        .with_bucket("ArchiveBucket", "archive-bucket-abc")
        .with_table("DownloadsTable", "downloads-abc")
        .with_queue("DownloadQueue", QUEUE_URL)
        .with_queue("DownloadDeadLetterQueue", f"http://127.0.0.1:4566/{ACCOUNT}/dlq-abc")
        .with_key("TokenKey", KEY_ID)
        .with_log_group("ApiFunctionLogGroup", "/aws/lambda/api")
        .with_log_group("WorkerFunctionLogGroup", "/aws/lambda/worker")
        .with_log_group("LifecycleFunctionLogGroup", "/aws/lambda/lifecycle")
        .with_table("GrantsTable", "grants-abc")
        .with_table("WebhookDeliveriesTable", "deliveries-abc")
        .with_table("TikTokQuotaTable", "quota-abc")
        .with_log_group("WebhookFunctionLogGroup", "/aws/lambda/webhook")
        .with_log_group("SweeperFunctionLogGroup", "/aws/lambda/sweeper")
        .with_queue("LifecycleQueue", f"http://127.0.0.1:4566/{ACCOUNT}/lifecycle-abc")
        .with_queue("ReadyQueue", f"http://127.0.0.1:4566/{ACCOUNT}/ready-abc")
        .with_queue("LifecycleDeadLetterQueue", f"http://127.0.0.1:4566/{ACCOUNT}/lifecycle-dlq-abc")
        .with_resource("TikTokAppSecret", SECRET_ARN, Id=SECRET_ARN)
        .with_resource("ApiFunctionRole", "api-role", Arn=role_arn("ApiFunction"))
        .with_resource("WorkerFunctionRole", "worker-role", Arn=role_arn("WorkerFunction"))
        .with_resource("LifecycleFunctionRole", "lifecycle-role", Arn=role_arn("LifecycleFunction"))
    )


def role_arn(function: str) -> str:
    """The execution role SAM makes for ``function`` (the key policy names them)."""
    return f"arn:aws:iam::{ACCOUNT}:role/{function}Role-abc"


def call(function: str, service: str, operation: str, **params: Any) -> AwsCall:
    return AwsCall(function, service, operation, params, REGION, ACCOUNT)


def only(requirements: list[Requirement]) -> Requirement:
    assert len(requirements) == 1, requirements
    return requirements[0]


# -- the template: parameters, conditions, environment ------------------------------------------


def test_parameters_default_and_override(template: Template) -> None:
    values = template.parameters()
    assert values["ObjectKeyPrefix"] == "archives/"
    assert values["FunctionMemorySize"] == "512"
    assert values["PartSizeMiB"] == ""
    assert template.parameters({"PartSizeMiB": "16"})["PartSizeMiB"] == "16"
    conditions = template.conditions()
    assert (conditions["HasPartSize"], conditions["HasUploadConcurrency"]) == (False, False)
    assert template.conditions(template.parameters({"PartSizeMiB": "16"}))["HasPartSize"] is True


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"NoSuchParameter": "x"}, "NoSuchParameter"),
        ({"PartSizeMiB": "4"}, "PartSizeMiB"),  # AllowedPattern: 5-5120
        ({"TikTokApiBaseUrl": "https://open.tiktokapis.com/v2"}, "TikTokApiBaseUrl"),
        ({"S3RetryMode": "legacy"}, "S3RetryMode"),  # AllowedValues
        ({"LogRetentionDays": "2"}, "LogRetentionDays"),  # numeric AllowedValues
        ({"FunctionMemorySize": "64"}, "FunctionMemorySize"),  # MinValue
        ({"PresignedUrlTtlSeconds": "604801"}, "PresignedUrlTtlSeconds"),  # MaxValue
        ({"WorkerBatchSize": "one"}, "WorkerBatchSize"),  # Number
    ],
)
def test_bad_parameter_values_are_refused_by_name(
    template: Template, overrides: dict[str, str], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        template.parameters(overrides)


def test_numeric_allowed_values_accept_the_listed_number(template: Template) -> None:
    assert template.parameters({"LogRetentionDays": "14"})["LogRetentionDays"] == "14"


def test_every_function_environment_resolves_to_strings(template: Template, local: LocalResources) -> None:
    functions = template.functions()
    assert functions == [
        "ApiFunction",
        "WorkerFunction",
        "LifecycleFunction",
        "WebhookFunction",
        "SweeperFunction",
    ]
    for overrides in ({}, {"PartSizeMiB": "16", "UploadConcurrency": "2"}):
        parameters = template.parameters(overrides)
        for function in functions:
            environment = template.function_environment(function, local, parameters)
            for key, value in environment.items():
                assert isinstance(value, str), (function, key, value)
                assert "AWS::NoValue" not in value, (function, key)
            assert ("PART_SIZE_MIB" in environment) is bool(overrides)
            assert ("UPLOAD_CONCURRENCY" in environment) is bool(overrides)


LAMBDA_SET = {
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_EXECUTION_ENV",
    "_HANDLER",
}


def test_function_variables_override_globals(template: Template, local: LocalResources) -> None:
    document = template.document
    globals_variables = document["Globals"]["Function"]["Environment"]["Variables"]
    for function in template.functions():
        own = document["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {})
        environment = template.function_environment(function, local)
        expected = {}
        for key, raw in {**globals_variables, **own}.items():
            value = template.resolve(raw, local)
            if value is not NO_VALUE:
                expected[key] = str(value)
        for key in own:
            if key in expected:
                assert environment[key] == str(template.resolve(own[key], local)), (function, key)
        assert {k: v for k, v in environment.items() if k not in LAMBDA_SET} == expected
        assert set(environment) >= LAMBDA_SET


def test_the_queue_url_is_not_the_workers(template: Template, local: LocalResources) -> None:
    # Today's truth; the general property is test_function_variables_override_globals.
    assert template.function_environment("ApiFunction", local)["DOWNLOAD_QUEUE_URL"] == QUEUE_URL
    assert "DOWNLOAD_QUEUE_URL" not in template.function_environment("WorkerFunction", local)


def test_lambda_sets_name_memory_and_region_but_no_timeout(template: Template, local: LocalResources) -> None:
    parameters = template.parameters({"FunctionMemorySize": "1024"})
    environment = template.function_environment("WorkerFunction", local, parameters)
    assert environment["AWS_LAMBDA_FUNCTION_NAME"] == "WorkerFunction"
    assert environment["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "1024"
    assert environment["AWS_REGION"] == environment["AWS_DEFAULT_REGION"] == REGION
    assert "AWS_LAMBDA_FUNCTION_TIMEOUT" not in environment
    assert template.function_memory("WorkerFunction", parameters) == 1024
    assert template.function_timeout("WorkerFunction") == 900
    assert template.function_timeout("ApiFunction") == 28
    assert environment["TOKEN_KMS_KEY_ID"] == KEY_ARN
    assert environment["BUCKET_NAME"] == "archive-bucket-abc"


def test_environment_matches_the_sam_transform(template: Template, local: LocalResources) -> None:
    # The harness merges Globals itself; SAM's own merge must agree.
    expanded = template.expanded()
    for function in template.functions():
        variables = expanded["Resources"][function]["Properties"]["Environment"]["Variables"]
        resolved = template.resolve(variables, local)
        environment = template.function_environment(function, local)
        assert {k: v for k, v in environment.items() if k in variables or k in resolved} == resolved


def test_missing_local_resource_is_an_error_naming_it(template: Template) -> None:
    partial = LocalResources().with_bucket("ArchiveBucket", "b")
    with pytest.raises(TemplateError, match="DownloadsTable"):
        template.function_environment("ApiFunction", partial)


def test_expanded_template_has_one_role_per_function(template: Template) -> None:
    resources = template.expanded()["Resources"]
    # Roles Lambda assumes (SAM also makes one for EventBridge Scheduler to invoke the sweeper).
    roles = {
        k
        for k, v in resources.items()
        if v["Type"] == "AWS::IAM::Role"
        and "lambda.amazonaws.com" in json.dumps(v["Properties"]["AssumeRolePolicyDocument"])
    }
    used = []
    for function in template.functions():
        assert resources[function]["Type"] == "AWS::Lambda::Function"
        role_id = resources[function]["Properties"]["Role"]["Fn::GetAtt"][0]
        assert resources[role_id]["Type"] == "AWS::IAM::Role"
        used.append(role_id)
    assert len(set(used)) == len(used) == len(template.functions())
    assert roles == set(used)


# -- resolution rules ----------------------------------------------------------------------------

SMALL = """
Parameters:
  Stage: {Type: String, Default: dev, AllowedValues: [dev, prod]}
  Names: {Type: CommaDelimitedList, Default: "a,b,c"}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
  NotProd: !Not [!Condition IsProd]
  Both: !And [!Condition IsProd, !Equals [!Ref "AWS::Region", eu-west-1]]
Resources:
  Queue: {Type: AWS::SQS::Queue}
"""


def test_intrinsics_resolve() -> None:
    small = Template(load_document(SMALL))
    local = LocalResources().with_queue("Queue", QUEUE_URL)
    resolve = small.resolve
    assert resolve({"Fn::Sub": "${AWS::Region}/${Queue.QueueName}/${!Literal}"}, local) == (
        "eu-west-1/downloads-abc/${Literal}"
    )
    assert (
        resolve({"Fn::Sub": ["${X}-${Stage}", {"X": {"Ref": "AWS::AccountId"}}]}, local) == "123456789012-dev"
    )
    assert resolve({"Fn::Join": ["-", {"Ref": "Names"}]}, local) == "a-b-c"
    assert resolve({"Fn::Select": [1, {"Fn::Split": [",", "x,y,z"]}]}, local) == "y"
    assert resolve({"Fn::If": ["IsProd", "p", {"Ref": "AWS::NoValue"}]}, local) is NO_VALUE
    assert resolve(
        {"A": {"Fn::If": ["IsProd", "p", {"Ref": "AWS::NoValue"}]}, "B": [1, {"Ref": "AWS::NoValue"}]}, local
    ) == {"B": [1]}
    assert (
        resolve({"Fn::GetAtt": ["Queue", "Arn"]}, local) == f"arn:aws:sqs:eu-west-1:{ACCOUNT}:downloads-abc"
    )
    assert small.conditions() == {"IsProd": False, "NotProd": True, "Both": False}
    assert small.conditions(small.parameters({"Stage": "prod"}))["Both"] is True


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"Fn::Nope": []}, "unknown intrinsic"),
        ({"Fn::ImportValue": "x"}, "not supported"),
        ({"Ref": "Missing"}, "no such parameter"),
        ({"Fn::GetAtt": ["Queue", "Nope"]}, "Nope"),
        ({"Fn::If": ["NoSuchCondition", "a", "b"]}, "unknown condition"),
        ({"Ref": "Queue", "Other": 1}, "only key"),
    ],
)
def test_unresolvable_values_raise(value: Any, message: str) -> None:
    small = Template(load_document(SMALL))
    with pytest.raises(TemplateError, match=message):
        small.resolve(value, LocalResources().with_queue("Queue", QUEUE_URL))


# -- the template's permissions ------------------------------------------------------------------


@pytest.fixture(scope="module")
def policies(template: Template, local: LocalResources) -> dict[str, list[dict[str, Any]]]:
    return {function: template.function_policies(function, local) for function in template.functions()}


def test_statements_are_resolved_and_tell_their_origin(policies: dict[str, list[dict[str, Any]]]) -> None:
    for statements in policies.values():
        for statement in statements:
            assert statement[ORIGIN_KEY]["kind"] in ("inline", "customer-managed", "aws-managed")
            assert "Fn::" not in repr(statement)
            assert "'Ref'" not in repr(statement)
    kinds = {
        s[ORIGIN_KEY]["name"] for s in policies["WorkerFunction"] if s[ORIGIN_KEY]["kind"] == "aws-managed"
    }
    assert any(name.endswith("AWSLambdaSQSQueueExecutionRole") for name in kinds)
    assert any(name.endswith("AWSLambdaBasicExecutionRole") for name in kinds)


def test_api_may_encrypt_tokens_only_for_their_purpose(
    template: Template, local: LocalResources, policies: dict[str, list[dict[str, Any]]]
) -> None:
    key_policy = template.key_policy("TokenKey", local)
    for purpose, allowed in ((PURPOSE, True), ("something else", False)):
        requirement = only(
            required_permissions(
                call(
                    "ApiFunction",
                    "kms",
                    "Encrypt",
                    KeyId=KEY_ARN,
                    Plaintext=b"t",
                    EncryptionContext={"purpose": purpose},
                )
            )
        )
        assert requirement.action == "kms:Encrypt"
        assert requirement.resource_arn == KEY_ARN
        decision = evaluate(
            requirement, policies["ApiFunction"], key_policy, principal_arn=role_arn("ApiFunction")
        )
        assert decision.allowed is allowed, decision.reason
    allowed = evaluate(
        only(
            required_permissions(
                call("ApiFunction", "kms", "Encrypt", KeyId=KEY_ARN, EncryptionContext={"purpose": PURPOSE})
            )
        ),
        policies["ApiFunction"],
        key_policy,
        principal_arn=role_arn("ApiFunction"),
    )
    # The key policy names the roles that may seal and open tokens.
    assert "SealAndOpenTokens" in allowed.reason


def test_decrypt_is_for_the_functions_acting_with_users_grants(
    template: Template, local: LocalResources, policies: dict[str, list[dict[str, Any]]]
) -> None:
    key_policy = template.key_policy("TokenKey", local)
    decrypt = AwsCall(
        "WorkerFunction",
        "kms",
        "Decrypt",
        {"CiphertextBlob": b"x", "EncryptionContext": {"purpose": PURPOSE}},
        REGION,
        ACCOUNT,
        {"KeyArn": KEY_ARN},
    )
    requirement = only(required_permissions(decrypt))
    # The API opens a user's grant too: a handed-over token joins it, a cancel uses it (issue 15).
    for function in ("WorkerFunction", "LifecycleFunction", "ApiFunction"):
        decision = evaluate(requirement, policies[function], key_policy, principal_arn=role_arn(function))
        assert decision.allowed, (function, decision.reason)
    for other in ("something else", None):
        context = {} if other is None else {"EncryptionContext": {"purpose": other}}
        refused = only(
            required_permissions(
                AwsCall(
                    "ApiFunction",
                    "kms",
                    "Decrypt",
                    {"CiphertextBlob": b"x", **context},
                    REGION,
                    ACCOUNT,
                    {"KeyArn": KEY_ARN},
                )
            )
        )
        decision = evaluate(
            refused, policies["ApiFunction"], key_policy, principal_arn=role_arn("ApiFunction")
        )
        assert not decision.allowed, (other, decision.reason)
    with pytest.raises(ValueError, match="KeyArn"):
        required_permissions(call("WorkerFunction", "kms", "Decrypt", CiphertextBlob=b"x"))


def test_a_key_policy_that_does_not_delegate_denies_what_iam_allows(
    policies: dict[str, list[dict[str, Any]]],
) -> None:
    requirement = only(
        required_permissions(
            call("ApiFunction", "kms", "Encrypt", KeyId=KEY_ARN, EncryptionContext={"purpose": PURPOSE})
        )
    )
    other_role = [
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/admin"},
            "Action": "kms:*",
            "Resource": "*",
        }
    ]
    decision = evaluate(requirement, policies["ApiFunction"], other_role)
    assert not decision.allowed
    assert "neither allows" in decision.reason
    assert evaluate(requirement, [], other_role, principal_arn=f"arn:aws:iam::{ACCOUNT}:role/admin").allowed
    with pytest.raises(PolicyError, match="key policy"):
        evaluate(requirement, policies["ApiFunction"])


def test_the_worker_may_only_send_a_deferred_job_again_to_its_own_queue(
    policies: dict[str, list[dict[str, Any]]],
) -> None:
    # A job TikTok's quota has no call for is sent again to the queue it came from (a new message, so
    # that its receive count does not grow): the worker may send there, and nowhere else.
    send = only(
        required_permissions(
            call("WorkerFunction", "sqs", "SendMessage", QueueUrl=QUEUE_URL, MessageBody="{}")
        )
    )
    assert send.resource_arn == f"arn:aws:sqs:{REGION}:{ACCOUNT}:downloads-abc"
    assert "DeferJobs" in evaluate(send, policies["WorkerFunction"]).reason
    assert evaluate(send, policies["ApiFunction"]).allowed
    lifecycle = only(
        required_permissions(
            call(
                "WorkerFunction",
                "sqs",
                "SendMessage",
                QueueUrl=f"http://127.0.0.1:4566/{ACCOUNT}/lifecycle-abc",
                MessageBody="{}",
            )
        )
    )
    assert not evaluate(lifecycle, policies["WorkerFunction"]).allowed
    receive = only(required_permissions(call("WorkerFunction", "sqs", "ReceiveMessage", QueueUrl=QUEUE_URL)))
    assert "AWSLambdaSQSQueueExecutionRole" in evaluate(receive, policies["WorkerFunction"]).reason


def test_objects_under_the_prefix_only_and_tls_only(
    template: Template, local: LocalResources, policies: dict[str, list[dict[str, Any]]]
) -> None:
    bucket_policy = template.bucket_policy_statements("ArchiveBucket", local)
    assert [s["Sid"] for s in bucket_policy] == ["DenyInsecureTransport", "DenyStaleSignatures"]
    for function in ("ApiFunction", "WorkerFunction"):  # the functions that store archives
        statements = policies[function]
        for operation in ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"):
            inside = only(
                required_permissions(
                    call(function, "s3", operation, Bucket="archive-bucket-abc", Key="archives/1.zip")
                )
            )
            assert inside.action == "s3:PutObject"
            assert inside.context["aws:SecureTransport"] == "true"
            assert evaluate(inside, statements, bucket_policy).allowed
            outside = only(
                required_permissions(
                    call(function, "s3", operation, Bucket="archive-bucket-abc", Key="other/1.zip")
                )
            )
            assert not evaluate(outside, statements, bucket_policy).allowed
        plain_http = inside.with_context({"aws:SecureTransport": "false"})
        decision = evaluate(plain_http, statements, bucket_policy)
        assert not decision.allowed
        assert "DenyInsecureTransport" in decision.reason
        presigned = AwsCall(
            function,
            "s3",
            "GeneratePresignedUrl",
            {
                "ClientMethod": "get_object",
                "Params": {"Bucket": "archive-bucket-abc", "Key": "archives/1.zip"},
            },
            REGION,
            ACCOUNT,
        )
        get = only(required_permissions(presigned))
        assert (get.action, get.context["s3:authType"]) == ("s3:GetObject", "REST-QUERY-STRING")
        assert evaluate(get, statements, bucket_policy).allowed
        # A cancelled request's archive is deleted — under the prefix only.
        for key, allowed in (("archives/1.zip", True), ("other/1.zip", False)):
            delete = only(
                required_permissions(
                    call(function, "s3", "DeleteObject", Bucket="archive-bucket-abc", Key=key)
                )
            )
            assert evaluate(delete, statements, bucket_policy).allowed is allowed


def test_records_and_events(policies: dict[str, list[dict[str, Any]]]) -> None:
    update = only(
        required_permissions(call("ApiFunction", "dynamodb", "UpdateItem", TableName="downloads-abc", Key={}))
    )
    assert update.resource_arn == f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/downloads-abc"
    assert evaluate(update, policies["WorkerFunction"]).allowed
    put = only(
        required_permissions(call("ApiFunction", "dynamodb", "PutItem", TableName="downloads-abc", Item={}))
    )
    assert not evaluate(put, policies["ApiFunction"]).allowed
    events = required_permissions(
        call(
            "WorkerFunction",
            "events",
            "PutEvents",
            Entries=[{"Source": "tiktok-archive", "DetailType": "x", "Detail": "{}"}],
        )
    )
    assert evaluate(only(events), policies["WorkerFunction"]).allowed


def test_unused_permissions_lists_customer_grants_nobody_used(
    policies: dict[str, list[dict[str, Any]]],
) -> None:
    used = {
        "ApiFunction": required_permissions(
            call("ApiFunction", "s3", "PutObject", Bucket="archive-bucket-abc", Key="archives/1.zip")
        )
    }
    report = unused_permissions({"ApiFunction": policies["ApiFunction"]}, used)
    assert not any("s3:PutObject" in line for line in report)
    assert any("s3:AbortMultipartUpload" in line and "ArchiveObjects" in line for line in report)
    assert any("sqs:SendMessage" in line for line in report)
    assert any("kms:Encrypt" in line for line in report)
    assert not any("logs:" in line or "xray:" in line for line in report)  # AWS managed: not ours to trim


# -- required_permissions ------------------------------------------------------------------------


def test_s3_requirements() -> None:
    def actions(operation: str, **params: Any) -> list[tuple[str, str]]:
        return [
            (r.action, r.resource_arn) for r in required_permissions(call("F", "s3", operation, **params))
        ]

    obj = "arn:aws:s3:::b/k"
    assert actions("AbortMultipartUpload", Bucket="b", Key="k", UploadId="u") == [
        ("s3:AbortMultipartUpload", obj)
    ]
    assert actions("HeadObject", Bucket="b", Key="k") == [("s3:GetObject", obj)]
    assert actions("GetObject", Bucket="b", Key="k", VersionId="v") == [("s3:GetObjectVersion", obj)]
    assert actions("ListParts", Bucket="b", Key="k", UploadId="u") == [("s3:ListMultipartUploadParts", obj)]
    assert actions("ListMultipartUploads", Bucket="b") == [
        ("s3:ListBucketMultipartUploads", "arn:aws:s3:::b")
    ]
    assert actions("DeleteObjects", Bucket="b", Delete={"Objects": [{"Key": "x"}, {"Key": "y"}]}) == [
        ("s3:DeleteObject", "arn:aws:s3:::b/x"),
        ("s3:DeleteObject", "arn:aws:s3:::b/y"),
    ]
    assert actions(
        "UploadPartCopy", Bucket="b", Key="k", CopySource="src/a%20b", PartNumber=1, UploadId="u"
    ) == [
        ("s3:PutObject", obj),
        ("s3:GetObject", "arn:aws:s3:::src/a b"),
    ]
    listing = only(required_permissions(call("F", "s3", "ListObjectsV2", Bucket="b", Prefix="archives/")))
    assert (listing.action, listing.resource_arn, listing.context["s3:prefix"]) == (
        "s3:ListBucket",
        "arn:aws:s3:::b",
        "archives/",
    )
    with pytest.raises(UnknownOperation, match="SSE-KMS"):
        required_permissions(
            call("F", "s3", "PutObject", Bucket="b", Key="k", ServerSideEncryption="aws:kms")
        )


def test_dynamodb_requirements() -> None:
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/t"
    query = only(required_permissions(call("F", "dynamodb", "Query", TableName="t", IndexName="by-user")))
    assert (query.action, query.resource_arn) == ("dynamodb:Query", f"{table}/index/by-user")
    transact = required_permissions(
        call(
            "F",
            "dynamodb",
            "TransactWriteItems",
            TransactItems=[
                {"Put": {"TableName": "t", "Item": {}}},
                {"Update": {"TableName": "u", "Key": {}}},
                {"ConditionCheck": {"TableName": "t", "Key": {}}},
                {"Delete": {"TableName": "t", "Key": {}}},
            ],
        )
    )
    assert [(r.action, r.resource_arn.rsplit("/", 1)[-1]) for r in transact] == [
        ("dynamodb:PutItem", "t"),
        ("dynamodb:UpdateItem", "u"),
        ("dynamodb:ConditionCheckItem", "t"),
        ("dynamodb:DeleteItem", "t"),
    ]
    batch = required_permissions(call("F", "dynamodb", "BatchWriteItem", RequestItems={"t": [], "u": []}))
    assert {(r.action, r.resource_arn.rsplit("/", 1)[-1]) for r in batch} == {
        ("dynamodb:BatchWriteItem", "t"),
        ("dynamodb:BatchWriteItem", "u"),
    }


def test_sqs_batches_check_the_single_action() -> None:
    for operation, action in (
        ("SendMessageBatch", "sqs:SendMessage"),
        ("DeleteMessageBatch", "sqs:DeleteMessage"),
        ("ChangeMessageVisibilityBatch", "sqs:ChangeMessageVisibility"),
    ):
        assert (
            only(required_permissions(call("F", "sqs", operation, QueueUrl=QUEUE_URL, Entries=[]))).action
            == action
        )


def test_kms_key_forms_and_context() -> None:
    by_id = only(
        required_permissions(
            call("F", "kms", "GenerateDataKey", KeyId=KEY_ID, EncryptionContext={"a": "1", "b": "2"})
        )
    )
    assert by_id.resource_arn == KEY_ARN
    assert by_id.context["kms:EncryptionContext:a"] == "1"
    assert by_id.context["kms:EncryptionContextKeys"] == ["a", "b"]
    with pytest.raises(ValueError, match="key_arn"):
        required_permissions(call("F", "kms", "Encrypt", KeyId="alias/tokens"))
    by_alias = only(
        required_permissions(call("F", "kms", "GenerateMac", KeyId="alias/tokens"), key_arn=lambda _: KEY_ARN)
    )
    assert (by_alias.resource_arn, by_alias.context["kms:RequestAlias"]) == (KEY_ARN, "alias/tokens")
    assert only(required_permissions(call("F", "kms", "VerifyMac", KeyId=KEY_ARN))).action == "kms:VerifyMac"


def test_events_secrets_and_scheduler() -> None:
    buses = required_permissions(
        call(
            "F",
            "events",
            "PutEvents",
            Entries=[
                {"Source": "s"},
                {"EventBusName": "custom"},
                {"EventBusName": "arn:aws:events:us-east-1:1:event-bus/x"},
            ],
        )
    )
    assert [r.resource_arn.rsplit(":", 1)[-1] for r in buses] == [
        "event-bus/default",
        "event-bus/custom",
        "event-bus/x",
    ]
    secret = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:tiktok/client-AbC123"
    requirement = only(required_permissions(call("F", "secretsmanager", "GetSecretValue", SecretId=secret)))
    assert requirement.resource_arn == secret
    assert resource_matches(f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:tiktok/client-??????", secret)
    with pytest.raises(ValueError, match="secret_arn"):
        required_permissions(call("F", "secretsmanager", "GetSecretValue", SecretId="tiktok/client"))
    by_name = only(
        required_permissions(
            call("F", "secretsmanager", "GetSecretValue", SecretId="tiktok/client"),
            secret_arn=lambda _: secret,
        )
    )
    assert by_name.resource_arn == secret
    role = f"arn:aws:iam::{ACCOUNT}:role/scheduler"
    schedule = required_permissions(
        call(
            "F", "scheduler", "CreateSchedule", Name="n", Target={"RoleArn": role, "Arn": "a"}, GroupName="g"
        )
    )
    assert [(r.action, r.resource_arn) for r in schedule] == [
        ("scheduler:CreateSchedule", f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/g/n"),
        ("iam:PassRole", role),
    ]
    assert only(
        required_permissions(call("F", "scheduler", "DeleteSchedule", Name="n"))
    ).resource_arn.endswith("schedule/default/n")


@pytest.mark.parametrize(
    ("service", "operation"),
    [("s3", "PutBucketPolicy"), ("dynamodb", "DeleteTable"), ("sqs", "CreateQueue"), ("lambda", "Invoke")],
)
def test_unknown_operations_fail_loudly(service: str, operation: str) -> None:
    with pytest.raises(UnknownOperation):
        required_permissions(call("F", service, operation, Bucket="b", TableName="t", QueueUrl=QUEUE_URL))


# -- evaluator -----------------------------------------------------------------------------------


def allow(**statement: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": "*", "Resource": "*", **statement}


def decide(
    statement: dict[str, Any], context: dict[str, Any] | None = None, action: str = "s3:GetObject"
) -> bool:
    requirement = Requirement(action, "arn:aws:s3:::b/archives/k", context or {})
    return evaluate(requirement, [statement]).allowed


def test_wildcards() -> None:
    assert wildcard_match("arn:aws:s3:::b/*", "arn:aws:s3:::b/a/b/c")
    assert wildcard_match("arn:aws:s3:::b/?", "arn:aws:s3:::b/x")
    assert not wildcard_match("arn:aws:s3:::b/?", "arn:aws:s3:::b/xy")
    assert wildcard_match("arn:*:b/*", "arn:aws:s3:::b/k")  # * spans ':' and '/'
    assert not wildcard_match("arn:aws:s3:::B/*", "arn:aws:s3:::b/k")  # resources are case-sensitive
    assert decide(allow(Action="S3:get*"))  # actions are not
    assert decide(allow(Action=["sqs:*", "s3:?etObject"]))
    assert not decide(allow(Action="s3:Put*"))
    assert decide({"Effect": "Allow", "NotAction": "s3:Put*", "Resource": "*"})
    assert not decide({"Effect": "Allow", "NotAction": "s3:Get*", "Resource": "*"})
    assert not decide({"Effect": "Allow", "Action": "*", "NotResource": "arn:aws:s3:::b/*"})
    assert decide({"Effect": "Allow", "Action": "*", "NotResource": "arn:aws:s3:::other/*"})
    assert decide(allow(Resource="arn:aws:s3:::b/${aws:username}/*"), {"aws:username": "archives"})
    assert not decide(allow(Resource="arn:aws:s3:::b/${aws:username}/*"))


def test_explicit_deny_wins() -> None:
    requirement = Requirement("s3:GetObject", "arn:aws:s3:::b/k", {})
    decision = evaluate(
        requirement, [allow(), {"Sid": "No", "Effect": "Deny", "Action": "s3:*", "Resource": "*"}]
    )
    assert not decision.allowed
    assert "No" in decision.reason
    assert evaluate(requirement, []).reason.endswith("no statement allows")


@pytest.mark.parametrize(
    ("condition", "context", "expected"),
    [
        ({"StringEquals": {"k": "v"}}, {"k": "v"}, True),
        ({"StringEquals": {"k": ["x", "v"]}}, {"k": "v"}, True),
        ({"StringEquals": {"k": "V"}}, {"k": "v"}, False),
        ({"StringEquals": {"k": "v"}}, {}, False),
        ({"StringEquals": {"K": "v"}}, {"k": "v"}, True),  # key names are case-insensitive
        ({"StringNotEquals": {"k": "v"}}, {"k": "w"}, True),
        ({"StringNotEquals": {"k": "v"}}, {"k": "v"}, False),
        ({"StringNotEquals": {"k": "v"}}, {}, True),  # IAM: a missing key makes a "not" operator true
        ({"StringEqualsIgnoreCase": {"k": "V"}}, {"k": "v"}, True),
        ({"StringLike": {"k": "arch*/?"}}, {"k": "archives/x"}, True),
        ({"StringLike": {"k": "arch*"}}, {"k": "other"}, False),
        ({"StringNotLike": {"k": "arch*"}}, {"k": "other"}, True),
        ({"StringNotLike": {"k": "arch*"}}, {"k": "archives"}, False),
        (
            {"ArnLike": {"aws:SourceArn": "arn:aws:sqs:*:123456789012:q*"}},
            {"aws:SourceArn": "arn:aws:sqs:eu-west-1:123456789012:queue"},
            True,
        ),
        (
            {"ArnLike": {"aws:SourceArn": "arn:aws:sqs:*:1:q"}},
            {"aws:SourceArn": "arn:aws:sqs:eu-west-1:2:q"},
            False,
        ),
        (
            {"ArnEquals": {"aws:SourceArn": "arn:aws:sqs:eu-west-1:1:q"}},
            {"aws:SourceArn": "arn:aws:sqs:eu-west-1:1:q"},
            True,
        ),
        ({"Bool": {"aws:SecureTransport": "true"}}, {"aws:SecureTransport": "true"}, True),
        ({"Bool": {"aws:SecureTransport": True}}, {"aws:SecureTransport": "false"}, False),
        ({"Bool": {"aws:SecureTransport": "false"}}, {}, False),
        ({"BoolIfExists": {"aws:SecureTransport": "false"}}, {}, True),
        ({"StringEqualsIfExists": {"k": "v"}}, {"k": "w"}, False),
        ({"NumericLessThan": {"n": 10}}, {"n": "9"}, True),
        ({"NumericLessThan": {"n": "10"}}, {"n": "10"}, False),
        ({"NumericLessThanEquals": {"n": "10"}}, {"n": "10"}, True),
        ({"NumericGreaterThan": {"n": "10"}}, {"n": "11"}, True),
        ({"NumericGreaterThanEquals": {"n": "10"}}, {"n": "9"}, False),
        ({"NumericNotEquals": {"n": "10"}}, {"n": "9"}, True),
        (
            {"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}},
            {"aws:CurrentTime": "2029-12-31T23:59:59Z"},
            True,
        ),
        ({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": "10.1.2.3"}, True),
        ({"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": "10.1.2.3"}, False),
        ({"Null": {"k": "true"}}, {}, True),
        ({"Null": {"k": "true"}}, {"k": "v"}, False),
        ({"Null": {"k": "false"}}, {"k": "v"}, True),
        ({"ForAllValues:StringEquals": {"keys": ["a", "b"]}}, {"keys": ["a"]}, True),
        ({"ForAllValues:StringEquals": {"keys": ["a", "b"]}}, {"keys": ["a", "c"]}, False),
        ({"ForAllValues:StringEquals": {"keys": ["a"]}}, {}, True),  # empty set: vacuously true
        ({"ForAnyValue:StringEquals": {"keys": ["a", "b"]}}, {"keys": ["c", "b"]}, True),
        ({"ForAnyValue:StringEquals": {"keys": ["a"]}}, {"keys": ["c"]}, False),
        ({"ForAnyValue:StringEquals": {"keys": ["a"]}}, {}, False),
        ({"ForAnyValue:StringLike": {"keys": "a*"}}, {"keys": ["x", "ab"]}, True),
        (
            {"StringEquals": {"k": "v"}, "Bool": {"b": "true"}},
            {"k": "v", "b": "false"},
            False,
        ),  # operators AND
        ({"StringEquals": {"k": "v", "j": "w"}}, {"k": "v"}, False),  # keys AND
        ({"StringEquals": {"k": "${aws:username}"}}, {"k": "ann", "aws:username": "ann"}, True),
    ],
)
def test_condition_operators(condition: dict[str, Any], context: dict[str, Any], expected: bool) -> None:
    assert decide(allow(Condition=condition), context) is expected


@pytest.mark.parametrize("operator", ["StringSortaEquals", "NullIfExists", "ForAllValues:Null", "Bool2"])
def test_unknown_condition_operators_raise(operator: str) -> None:
    with pytest.raises(PolicyError, match="operator"):
        decide(allow(Condition={operator: {"k": "v"}}), {"k": "v"})


def test_malformed_statements_raise() -> None:
    with pytest.raises(PolicyError, match="Effect"):
        decide({"Effect": "allow", "Action": "*", "Resource": "*"})
    with pytest.raises(PolicyError, match="unknown elements"):
        decide(allow(Conditon={"Bool": {"k": "true"}}))
    with pytest.raises(PolicyError, match="Principal"):
        decide(allow(Principal="*"))
    with pytest.raises(PolicyError, match="Action"):
        decide(allow(Action="GetObject"))


def test_resource_policies_deny_by_principal_and_grant_only_by_name() -> None:
    requirement = Requirement("s3:GetObject", "arn:aws:s3:::b/k", {"aws:PrincipalAccount": ACCOUNT})
    root = {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
    role = f"arn:aws:iam::{ACCOUNT}:role/fn"
    deny_account = {"Effect": "Deny", "Principal": root, "Action": "s3:*", "Resource": "*"}
    deny_other = {
        "Effect": "Deny",
        "Principal": {"AWS": "arn:aws:iam::999999999999:root"},
        "Action": "s3:*",
        "Resource": "*",
    }
    grant_account = {"Effect": "Allow", "Principal": root, "Action": "s3:*", "Resource": "*"}
    grant_role = {"Effect": "Allow", "Principal": {"AWS": role}, "Action": "s3:*", "Resource": "*"}
    assert not evaluate(requirement, [allow()], [deny_account]).allowed
    assert evaluate(requirement, [allow()], [deny_other]).allowed
    assert not evaluate(requirement, [], [grant_account]).allowed  # delegation alone grants nothing
    assert evaluate(requirement, [], [grant_role], principal_arn=role).allowed
    assert not evaluate(requirement, [], [grant_role]).allowed
    assert not evaluate(
        requirement,
        [],
        [{"Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"}, "Action": "*", "Resource": "*"}],
    ).allowed


FUNCTIONS = """
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: python3.13
    MemorySize: 256
    Environment:
      Variables:
        KEPT: from-globals
        OVERRIDDEN: from-globals
        REMOVED: from-globals
        NUMBER: 7
Resources:
  Queue: {Type: AWS::SQS::Queue}
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.handler
      CodeUri: src/
      Environment:
        Variables:
          OVERRIDDEN: !GetAtt Queue.QueueName
          REMOVED: !Ref AWS::NoValue
  Bad:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.handler
      CodeUri: src/
      Environment:
        Variables:
          AWS_REGION: us-east-1
"""


def test_function_variables_win_and_novalue_removes() -> None:
    small = Template(load_document(FUNCTIONS))
    local = LocalResources().with_queue("Queue", QUEUE_URL)
    environment = small.function_environment("Fn", local)
    assert environment["KEPT"] == "from-globals"
    assert environment["OVERRIDDEN"] == "downloads-abc"
    assert "REMOVED" not in environment
    assert environment["NUMBER"] == "7"
    assert environment["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert small.function_timeout("Fn") == 3
    with pytest.raises(TemplateError, match="reserved"):
        small.function_environment("Bad", local)


def test_only_the_webhook_function_may_send_to_the_ready_queue(
    policies: dict[str, list[dict[str, Any]]],
) -> None:
    # TikTok's download.ready work is trusted as TikTok's (its signature was checked): no other function
    # of the stack may put work there (backends send to the download queue, which the worker parses as
    # jobs only).
    send = only(
        required_permissions(
            call(
                "WebhookFunction",
                "sqs",
                "SendMessage",
                QueueUrl=f"http://127.0.0.1:4566/{ACCOUNT}/ready-abc",
                MessageBody="{}",
            )
        )
    )
    allowed = {function for function, statements in policies.items() if evaluate(send, statements).allowed}
    assert allowed == {"WebhookFunction"}
