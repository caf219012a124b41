"""template.yaml's operator side: alarms, the dashboard, limits and the policies that bound the functions.

Each test reads the template as CloudFormation would and names what it pins, so a resource added
without its alarm, a dashboard widget on a metric the code never emits, or a limit that stopped being
configurable fails here, not in someone's account.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infrastructure.test_template import _CfnLoader

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "\n".join(p.read_text() for p in (ROOT / "src").rglob("*.py"))


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    document: dict[str, Any] = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CfnLoader)
    return document


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return dict(template["Resources"])


def _of_type(resources: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def _alarms(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: r["Properties"] for name, r in _of_type(resources, "AWS::CloudWatch::Alarm").items()}


def _dimension(alarm: dict[str, Any], name: str) -> Any:
    return next((d["Value"] for d in alarm.get("Dimensions", []) if d["Name"] == name), None)


def _template_environment() -> dict[str, Any]:
    document = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CfnLoader)
    return dict(document["Globals"]["Function"]["Environment"]["Variables"])


def _emitted_metrics() -> set[str]:
    """The metric names the code emits (Powertools ``add_metric`` / ``single_metric``)."""
    return set(re.findall(r'name="([A-Za-z]+)"', SOURCE)) & set(
        re.findall(r'(?:add_metric|single_metric)\(\s*name="([A-Za-z]+)"', SOURCE)
    )


def test_every_alarm_notifies_the_topic_both_ways_and_says_what_it_means(resources: dict[str, Any]) -> None:
    alarms = _alarms(resources)
    assert alarms
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        assert alarm["OKActions"] == [{"Ref": "AlarmTopic"}], name
        assert alarm["TreatMissingData"] == "notBreaching", name  # no data is a quiet system, not an outage
        assert len(alarm["AlarmDescription"]) > 20, name


def test_every_dead_letter_queue_alarms_on_its_first_message(resources: dict[str, Any]) -> None:
    dead_letter_queues = {
        q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for q in _of_type(resources, "AWS::SQS::Queue").values()
        if "RedrivePolicy" in q.get("Properties", {})
    }
    assert dead_letter_queues == {"DownloadDeadLetterQueue", "LifecycleDeadLetterQueue"}
    watched = {
        _dimension(a, "QueueName")["Fn::GetAtt"][0]
        for a in _alarms(resources).values()
        if a.get("MetricName") == "ApproximateNumberOfMessagesVisible"
        and a["Threshold"] == 0
        and a["ComparisonOperator"] == "GreaterThanThreshold"
    }
    assert dead_letter_queues <= watched


def test_every_work_queue_alarms_when_its_oldest_message_is_old(resources: dict[str, Any]) -> None:
    work_queues = {
        name
        for name, q in _of_type(resources, "AWS::SQS::Queue").items()
        if "RedrivePolicy" in q["Properties"]
    }
    watched = {
        _dimension(a, "QueueName")["Fn::GetAtt"][0]
        for a in _alarms(resources).values()
        if a.get("MetricName") == "ApproximateAgeOfOldestMessage"
    }
    assert work_queues == watched == {"DownloadQueue", "LifecycleQueue", "ReadyQueue"}


def test_every_function_alarms_on_errors_and_throttles(resources: dict[str, Any]) -> None:
    functions = set(_of_type(resources, "AWS::Serverless::Function"))
    assert len(functions) == 5
    for metric in ("Errors", "Throttles"):
        watched = {
            _dimension(a, "FunctionName")["Ref"]
            for a in _alarms(resources).values()
            if a.get("Namespace") == "AWS/Lambda" and a.get("MetricName") == metric
        }
        assert watched == functions, metric


def test_alarms_on_the_services_own_metrics_watch_metrics_the_code_emits(resources: dict[str, Any]) -> None:
    own = {a["MetricName"]: a for a in _alarms(resources).values() if a.get("Namespace") == "TikTokArchive"}
    assert set(own) == {"DownloadFailures", "EventsNotPublished", "AppRefused", "SweepsUnfinished"}
    emitted = _emitted_metrics()
    for metric, alarm in own.items():
        assert metric in emitted, f"{metric} is alarmed on but never emitted"
        # Powertools adds the service as the metric's only default dimension.
        assert alarm["Dimensions"] == [{"Name": "service", "Value": "tiktok-archive"}]
    # TikTok refusing the app itself (invalid_client ...) is worth waking someone at its first count.
    refused = own["AppRefused"]
    assert (refused["Threshold"], refused["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    # …in the namespace the functions are given.
    environment = _template_environment()
    assert environment["POWERTOOLS_METRICS_NAMESPACE"] == "TikTokArchive"


def test_the_alarm_email_is_optional(template: dict[str, Any], resources: dict[str, Any]) -> None:
    assert template["Parameters"]["AlarmEmail"]["Default"] == ""
    assert resources["AlarmEmailSubscription"]["Condition"] == "HasAlarmEmail"
    assert resources["AlarmTopic"]["Properties"]["KmsMasterKeyId"]  # alarm texts are encrypted at rest
    outputs = template["Outputs"]
    assert outputs["AlarmTopicArn"]["Value"] == {"Ref": "AlarmTopic"}
    assert outputs["DashboardName"]["Value"] == {"Ref": "OperatorDashboard"}


def _dashboard(resources: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """The dashboard body as JSON (``${…}`` references replaced by their name) and the names referenced."""
    body = resources["OperatorDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    references = set(re.findall(r"\$\{([^}]+)\}", body))
    return json.loads(re.sub(r"\$\{([^}]+)\}", r"\1", body)), references


def test_the_dashboard_is_valid_json_and_shows_every_function_and_queue(resources: dict[str, Any]) -> None:
    body, references = _dashboard(resources)
    widgets = body["widgets"]
    assert len(widgets) >= 6
    for widget in widgets:
        assert widget["type"] == "metric"
        assert widget["properties"]["title"]
        assert widget["properties"]["region"] == "AWS::Region"
    functions = set(_of_type(resources, "AWS::Serverless::Function"))
    queues = {f"{name}.QueueName" for name in _of_type(resources, "AWS::SQS::Queue")}
    assert functions <= references
    assert queues <= references
    for reference in references - {"AWS::Region", "AWS::StackName"}:
        assert reference.split(".")[0] in resources, reference


def test_the_dashboard_shows_only_metrics_that_exist(resources: dict[str, Any]) -> None:
    body, _ = _dashboard(resources)
    shown: set[str] = set()
    for widget in body["widgets"]:
        for line in widget["properties"]["metrics"]:
            if isinstance(line[0], dict):  # a SEARCH expression
                shown.update(re.findall(r'MetricName=\\?"(\w+)\\?"', line[0]["expression"]))
            elif "TikTokArchive" in (line[0], line[0] == "." and widget_namespace(widget)):
                shown.add(line[1])
    assert shown <= _emitted_metrics(), shown - _emitted_metrics()
    assert {"Downloads", "ArchiveBytes", "TransferDuration", "EventsNotPublished", "ChecksRedriven"} <= shown


def widget_namespace(widget: dict[str, Any]) -> str:
    """The namespace of a widget's first plain metric line (``.`` repeats the line above)."""
    first = next(line for line in widget["properties"]["metrics"] if isinstance(line[0], str))
    return str(first[0])


def test_the_dashboards_api_widget_names_the_api(resources: dict[str, Any]) -> None:
    body, _ = _dashboard(resources)
    api_name = resources["DownloadsApi"]["Properties"]["Name"]["Fn::Sub"]
    api_lines = [
        line
        for widget in body["widgets"]
        for line in widget["properties"]["metrics"]
        if isinstance(line[0], str) and line[0] == "AWS/ApiGateway"
    ]
    assert api_lines
    assert all(line[3] == api_name.replace("${AWS::StackName}", "AWS::StackName") for line in api_lines)


def test_every_function_has_a_reserved_concurrency_an_operator_can_set(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    parameters = template["Parameters"]
    conditions = template["Conditions"]
    for name, function in _of_type(resources, "AWS::Serverless::Function").items():
        condition, value, unset = function["Properties"]["ReservedConcurrentExecutions"]["Fn::If"]
        parameter = parameters[value["Ref"]]
        assert unset == {"Ref": "AWS::NoValue"}, name
        assert conditions[condition] == {"Fn::Not": [{"Fn::Equals": [value, ""]}]}, name
        # Unreserved by default: an account whose limit is 10 (new accounts) cannot reserve any, and the
        # queues' MaximumConcurrency and API Gateway's throttles bound the functions already.
        assert parameter["Default"] == "", name
        assert re.fullmatch(parameter["AllowedPattern"], "")
        assert re.fullmatch(parameter["AllowedPattern"], "20")
        assert not re.fullmatch(parameter["AllowedPattern"], "-1"), name


def test_queue_consumers_are_capped_and_the_lifecycle_stays_under_tiktoks_rate(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    parameters = template["Parameters"]

    def sqs_event(function: str) -> dict[str, Any]:
        events = resources[function]["Properties"]["Events"].values()
        return next(e["Properties"] for e in events if e["Type"] == "SQS")

    for function, parameter in (
        ("WorkerFunction", "WorkerMaxConcurrency"),
        ("LifecycleFunction", "LifecycleMaxConcurrency"),
    ):
        assert sqs_event(function)["ScalingConfig"]["MaximumConcurrency"] == {"Ref": parameter}
        assert parameters[parameter]["MinValue"] == 2  # SQS's own minimum
    # TikTok allows 1000 portability calls a minute per app: the default pace keeps well under it.
    pace_ms = int(parameters["StatusPollPaceMs"]["Default"])
    checks_per_minute = parameters["LifecycleMaxConcurrency"]["Default"] * 60_000 / pace_ms
    assert checks_per_minute <= 1000 * 0.8, checks_per_minute


def test_the_api_is_throttled_per_stage_and_the_open_webhook_route_on_its_own(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    api = resources["DownloadsApi"]["Properties"]
    # No usage plan (no API key): the stage's MethodSettings throttle every route.
    assert "UsagePlan" not in api["Auth"]
    every_route, webhook_route = api["MethodSettings"]
    assert (every_route["ResourcePath"], every_route["HttpMethod"]) == ("/*", "*")
    assert every_route["ThrottlingRateLimit"] == {"Ref": "ApiThrottleRateLimit"}
    assert every_route["ThrottlingBurstLimit"] == {"Ref": "ApiThrottleBurstLimit"}
    assert (
        webhook_route["ResourcePath"] == "/~1webhooks~1tiktok"
    )  # API Gateway's escaping of /webhooks/tiktok
    assert webhook_route["HttpMethod"] == "POST"
    assert webhook_route["ThrottlingRateLimit"] == {"Ref": "WebhookThrottleRateLimit"}
    assert webhook_route["ThrottlingBurstLimit"] == {"Ref": "WebhookThrottleBurstLimit"}
    parameters = template["Parameters"]
    for name in (
        "ApiThrottleRateLimit",
        "ApiThrottleBurstLimit",
        "WebhookThrottleRateLimit",
        "WebhookThrottleBurstLimit",
    ):
        assert parameters[name]["Type"] == "Number", name
        assert parameters[name]["MinValue"] >= 1, name
    events = resources["WebhookFunction"]["Properties"]["Events"].values()
    (route,) = [e["Properties"] for e in events if e["Type"] == "Api"]
    assert route["Auth"] == {"Authorizer": "NONE"}  # TikTok signs no SigV4; its own signature is checked


def test_api_access_logs_are_json_and_carry_no_header(resources: dict[str, Any]) -> None:
    settings = resources["DownloadsApi"]["Properties"]["AccessLogSetting"]
    fields = json.loads(settings["Format"])
    # What the README's runbook reads in them
    assert {"$context.requestId", "$context.status", "$context.integrationErrorMessage"} <= set(
        fields.values()
    )
    assert not any(
        "header" in str(value).lower() or "authorizer" in str(value).lower() for value in fields.values()
    )
    assert settings["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    assert resources["ApiAccessLogGroup"]["Properties"]["RetentionInDays"]


def test_the_bucket_refuses_plain_http_and_stale_signatures(resources: dict[str, Any]) -> None:
    statements = {
        s["Sid"]: s for s in resources["ArchiveBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    }
    assert statements["DenyInsecureTransport"]["Effect"] == "Deny"
    assert statements["DenyInsecureTransport"]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    stale = statements["DenyStaleSignatures"]
    assert stale["Effect"] == "Deny"
    assert stale["Action"] == "s3:GetObject"
    # s3:signatureAge is in milliseconds: the longest link the functions hand out, and not a moment more.
    assert stale["Condition"] == {
        "NumericGreaterThan": {"s3:signatureAge": {"Fn::Sub": "${PresignedUrlTtlSeconds}000"}}
    }


def _key_principals(statements: list[dict[str, Any]], action: str) -> set[str]:
    """The roles (by logical id) a key policy lets do ``action``."""
    found: set[str] = set()
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if action not in actions:
            continue
        principals = statement["Principal"]["AWS"]
        for principal in principals if isinstance(principals, list) else [principals]:
            found.add(principal["Fn::GetAtt"][0] if "Fn::GetAtt" in principal else json.dumps(principal))
    return found


def test_the_token_key_is_usable_only_by_the_roles_that_hold_tokens(resources: dict[str, Any]) -> None:
    key = resources["TokenKey"]["Properties"]
    statements = key["KeyPolicy"]["Statement"]
    # The functions that act for a user seal and open their tokens: the API too, since it exchanges a
    # handed refresh token at once and cancels a pending request with the grant's token.
    holders = {"ApiFunctionRole", "WorkerFunctionRole", "LifecycleFunctionRole"}
    assert _key_principals(statements, "kms:Encrypt") == holders
    assert _key_principals(statements, "kms:Decrypt") == holders
    for statement in statements:
        if statement["Sid"] != "AccountAdministers":
            purposes = statement["Condition"]["StringEquals"]["kms:EncryptionContext:purpose"]
            assert set(purposes) == {"tiktok-archive access token", "tiktok-archive refresh token"}
    administers = next(s for s in statements if s["Sid"] == "AccountAdministers")
    assert not {"kms:Decrypt", "kms:Encrypt", "kms:*"} & set(administers["Action"])
    assert key["EnableKeyRotation"] is True
    # The webhook receiver and the sweeper never see a token: neither may open one.
    for function in ("WebhookFunction", "SweeperFunction"):
        policies = json.dumps(resources[function]["Properties"].get("Policies", []))
        assert "UserGrantsPolicy" not in policies, function
        assert "kms:" not in policies, function
