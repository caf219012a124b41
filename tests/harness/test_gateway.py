"""tests/harness/gateway.py: API Gateway as template.yaml configures it (no servers).

The routes and their authorization come from the SAM-expanded template, the resource policy from the
``CallerRoleArns`` parameter, and SigV4 signatures are checked against botocore's own signer.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.harness.cfn_template import LocalResources, Template
from tests.harness.events import BACKEND, OTHER, get_event
from tests.harness.gateway import (
    MISSING_AUTHENTICATION_TOKEN,
    Gateway,
    GatewayAnswer,
    LocalCredential,
    SigV4Verifier,
    Verified,
    principal_arn,
)

BACKEND_ROLE = "arn:aws:iam::123456789012:role/tiktok-archive-backend"
OTHER_ROLE = "arn:aws:iam::123456789012:role/another-backend"
THIRD = "arn:aws:sts::123456789012:assumed-role/third-backend/s-1"
API_ROUTES = [
    ("POST", "/requests"),
    ("POST", "/downloads"),
    ("GET", "/downloads/7234567890123456789"),
    ("DELETE", "/downloads/7234567890123456789"),
    ("GET", "/users/-000abc/requests"),
    ("DELETE", "/users/-000abc"),
]


@pytest.fixture(scope="module")
def template() -> Template:
    return Template.load()


@pytest.fixture(scope="module")
def gateway(template: Template) -> Gateway:
    """Default parameters: any principal of the account whose IAM policy allows execute-api:Invoke."""
    return Gateway(template)


@pytest.fixture(scope="module")
def restricted(template: Template) -> Gateway:
    """CallerRoleArns names the backend's role only."""
    return Gateway(template, {"CallerRoleArns": BACKEND_ROLE})


def _denied(answer: GatewayAnswer | None, caller: str, resource: str, *, explicit: bool) -> None:
    assert answer is not None
    suffix = " with an explicit deny" if explicit else ""
    assert (answer.status, dict(answer.body), answer.error_type) == (
        403,
        {
            "Message": f"User: {caller} is not authorized to perform: execute-api:Invoke "
            f"on resource: {resource}{suffix}"
        },
        "AccessDeniedException",
    )


def test_the_routes_and_their_authorization_are_the_templates(gateway: Gateway) -> None:
    routes = {(r.method, r.resource): (r.function, r.authorization) for r in gateway.routes}
    assert routes == {
        ("POST", "/requests"): ("ApiFunction", "AWS_IAM"),
        ("POST", "/downloads"): ("ApiFunction", "AWS_IAM"),
        ("GET", "/downloads/{request_id}"): ("ApiFunction", "AWS_IAM"),
        ("DELETE", "/downloads/{request_id}"): ("ApiFunction", "AWS_IAM"),
        ("GET", "/users/{open_id}/requests"): ("ApiFunction", "AWS_IAM"),
        ("DELETE", "/users/{open_id}"): ("ApiFunction", "AWS_IAM"),
        ("POST", "/webhooks/tiktok"): ("WebhookFunction", "NONE"),
    }
    assert gateway.stage == "v1"


def test_an_assumed_roles_principal_arn_is_its_roles() -> None:
    assert principal_arn(BACKEND) == BACKEND_ROLE
    user = "arn:aws:iam::123456789012:user/ops"
    assert principal_arn(user) == user


@pytest.mark.parametrize(("method", "path"), API_ROUTES)
def test_default_parameters_let_any_principal_of_the_account_in(
    gateway: Gateway, method: str, path: str
) -> None:
    # The resource policy delegates to IAM (the account root): the callers' invoke policies decide.
    assert gateway.authorize(method, path, BACKEND) is None
    assert gateway.authorize(method, path, OTHER) is None
    assert gateway.authorize(method, path, "arn:aws:iam::123456789012:user/ops") is None


def test_default_parameters_refuse_a_principal_whose_policies_do_not_allow_invoke(template: Template) -> None:
    gateway = Gateway(template, identity_policies={BACKEND_ROLE: Gateway(template).invoke_policy()})
    assert gateway.authorize("GET", "/downloads/1", BACKEND) is None
    answer = gateway.authorize("GET", "/downloads/1", OTHER)
    _denied(answer, OTHER, gateway.resource_arn("GET", "/downloads/1"), explicit=False)


@pytest.mark.parametrize(("method", "path"), API_ROUTES)
def test_with_caller_role_arns_a_listed_roles_session_gets_through_and_another_role_is_refused(
    restricted: Gateway, method: str, path: str
) -> None:
    assert restricted.authorize(method, path, BACKEND) is None
    # Another session of the same role is the same principal.
    assert restricted.authorize(method, path, BACKEND.rsplit("/", 1)[0] + "/another-session") is None
    answer = restricted.authorize(method, path, OTHER)
    resource = f"arn:aws:execute-api:eu-west-1:123456789012:abc123/v1/{method}/{path.lstrip('/')}"
    _denied(answer, OTHER, resource, explicit=True)


def test_a_listed_role_needs_no_identity_policy_of_its_own(template: Template) -> None:
    # The resource policy names the role itself: that grants, without the role's IAM policies.
    gateway = Gateway(template, {"CallerRoleArns": BACKEND_ROLE}, identity_policies={})
    assert gateway.authorize("POST", "/requests", BACKEND) is None


def test_caller_role_arns_is_a_list(template: Template) -> None:
    # The harness's resolver gives the CommaDelimitedList as a list: each role is a principal of its own.
    gateway = Gateway(template, {"CallerRoleArns": f"{BACKEND_ROLE},{OTHER_ROLE}"})
    assert gateway.authorize("GET", "/downloads/1", BACKEND) is None
    assert gateway.authorize("GET", "/downloads/1", OTHER) is None
    _denied(
        gateway.authorize("GET", "/downloads/1", THIRD),
        THIRD,
        gateway.resource_arn("GET", "/downloads/1"),
        explicit=True,
    )
    [allow] = [s for s in gateway.resource_policy if s["Effect"] == "Allow" and s["Principal"] != "*"]
    assert allow["Principal"] == {"AWS": [BACKEND_ROLE, OTHER_ROLE]}


def test_the_resource_policys_resources_are_the_apis_arns(template: Template) -> None:
    local = LocalResources().with_resource("DownloadsApi", "k2l0c4l9ap")
    gateway = Gateway(template, local=local)
    assert gateway.api_id == "k2l0c4l9ap"
    resources = [s["Resource"] for s in gateway.resource_policy]
    assert resources == [
        "arn:aws:execute-api:eu-west-1:123456789012:k2l0c4l9ap/*/POST/webhooks/tiktok",
        "arn:aws:execute-api:eu-west-1:123456789012:k2l0c4l9ap/*",
    ]
    assert gateway.resource_arn("GET", "/downloads/7") == (
        "arn:aws:execute-api:eu-west-1:123456789012:k2l0c4l9ap/v1/GET/downloads/7"
    )


@pytest.mark.parametrize("parameters", [{}, {"CallerRoleArns": BACKEND_ROLE}])
def test_the_webhook_route_needs_no_identity(template: Template, parameters: dict[str, str]) -> None:
    gateway = Gateway(template, parameters)
    assert gateway.authorize("POST", "/webhooks/tiktok", None) is None


@pytest.mark.parametrize(("method", "path"), API_ROUTES)
def test_a_backend_route_without_identity_is_missing_its_authentication_token(
    gateway: Gateway, method: str, path: str
) -> None:
    answer = gateway.authorize(method, path, None)
    assert answer == MISSING_AUTHENTICATION_TOKEN
    assert answer.data == b'{"message":"Missing Authentication Token"}'


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nowhere"),
        ("PUT", "/downloads"),
        ("GET", "/downloads"),
        ("GET", "/webhooks/tiktok"),
        ("GET", "/downloads/1/extra"),
        ("GET", "/users/x"),
        ("POST", "/"),
    ],
)
def test_an_unknown_route_is_missing_its_authentication_token_signed_or_not(
    gateway: Gateway, method: str, path: str
) -> None:
    assert gateway.route(method, path) is None
    assert gateway.authorize(method, path, BACKEND) == MISSING_AUTHENTICATION_TOKEN
    assert gateway.authorize(method, path, None) == MISSING_AUTHENTICATION_TOKEN


def test_refusal_judges_an_already_built_event_by_its_identity(restricted: Gateway) -> None:
    assert restricted.refusal(get_event(1, BACKEND)) is None
    answer = restricted.refusal(get_event(1, OTHER))
    assert answer is not None
    assert answer["statusCode"] == 403
    assert json.loads(answer["body"])["Message"].startswith(f"User: {OTHER} is not authorized")
    assert answer["headers"]["x-amzn-ErrorType"] == "AccessDeniedException"
    unsigned = restricted.refusal(get_event(1, None))
    assert unsigned is not None
    assert json.loads(unsigned["body"]) == {"message": "Missing Authentication Token"}
    # The caller may also be given (what SigV4 verified), whatever the event says.
    assert restricted.refusal(get_event(1, BACKEND), OTHER) is not None
    assert restricted.refusal(get_event(1, None), BACKEND) is None


def test_the_event_carries_the_query_the_path_parameters_and_the_identity(gateway: Gateway) -> None:
    event = gateway.event(
        "GET",
        "/users/-000a%2Fb/requests",
        query="limit=5&next=abc%3D&limit=7",
        headers={"Host": ["127.0.0.1:8080"], "User-Agent": ["curl/7.88.1"], "X-Multi": ["1", "2"]},
        caller=BACKEND,
        access_key="AKIALOCALBACKEND0001",
    )
    assert event["resource"] == "/users/{open_id}/requests"
    assert event["httpMethod"] == "GET"
    assert event["pathParameters"] == {"open_id": "-000a/b"}
    assert event["queryStringParameters"] == {"limit": "7", "next": "abc="}
    assert event["multiValueQueryStringParameters"] == {"limit": ["5", "7"], "next": ["abc="]}
    assert event["headers"]["X-Multi"] == "2"
    assert event["multiValueHeaders"]["X-Multi"] == ["1", "2"]
    assert event["body"] is None
    assert event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert (context["stage"], context["path"]) == ("v1", "/v1/users/-000a%2Fb/requests")
    assert context["resourcePath"] == "/users/{open_id}/requests"
    identity = context["identity"]
    assert identity["userArn"] == BACKEND
    assert identity["accountId"] == "123456789012"
    assert identity["accessKey"] == "AKIALOCALBACKEND0001"
    assert identity["caller"] == identity["user"]
    assert identity["caller"].startswith("AROA")
    assert identity["caller"].endswith(":backend-7f3a")
    assert identity["userAgent"] == "curl/7.88.1"


def test_the_event_carries_a_text_body_as_text_and_a_binary_body_in_base64(gateway: Gateway) -> None:
    text = gateway.event("POST", "/requests", body=b'{"access_token": "x"}', caller=BACKEND)
    assert (text["body"], text["isBase64Encoded"]) == ('{"access_token": "x"}', False)
    raw = b"\x00\xff\xfe binary"
    binary = gateway.event("POST", "/webhooks/tiktok", body=raw)
    assert binary["isBase64Encoded"] is True
    assert base64.b64decode(binary["body"]) == raw
    # An open route hands over no caller.
    identity = binary["requestContext"]["identity"]
    assert identity["userArn"] is None
    assert identity["accessKey"] is None


# -- SigV4 ---------------------------------------------------------------------------------------
BACKEND_KEY = LocalCredential("AKIALOCALBACKEND0001", "local-backend-secret-0123456789abcdef", BACKEND)
NOW = datetime(2026, 11, 27, 18, 0, 0, tzinfo=UTC)


def _verifier() -> SigV4Verifier:
    return SigV4Verifier([BACKEND_KEY], clock=NOW.timestamp)


def _signed(
    method: str,
    target: str,
    body: bytes = b"",
    *,
    secret: str = BACKEND_KEY.secret_access_key,
    key_id: str = BACKEND_KEY.access_key_id,
    region: str = "eu-west-1",
    service: str = "execute-api",
    at: datetime = NOW,
) -> dict[str, list[str]]:
    """Headers of a request signed by botocore's SigV4Auth (as a backend signs), at ``at``."""
    request = AWSRequest(
        method=method,
        url=f"http://127.0.0.1:8080{target}",
        data=body,
        headers={"Content-Type": "application/json"} if body else {},
    )
    signer = SigV4Auth(Credentials(key_id, secret), service, region)
    request.context["timestamp"] = at.strftime("%Y%m%dT%H%M%SZ")
    request.headers["X-Amz-Date"] = request.context["timestamp"]
    request.headers["Host"] = "127.0.0.1:8080"
    canonical = signer.canonical_request(request)
    signature = signer.signature(signer.string_to_sign(request, canonical), request)
    signed_headers = signer.signed_headers(signer.headers_to_sign(request))
    request.headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={signer.scope(request)}, SignedHeaders={signed_headers}, "
        f"Signature={signature}"
    )
    return {name: [value] for name, value in request.headers.items()}


def _message(answer: Verified | GatewayAnswer) -> str:
    assert isinstance(answer, GatewayAnswer), answer
    assert answer.status == 403
    return str(answer.body["message"])


def test_a_botocore_signature_is_verified_and_names_the_caller() -> None:
    body = json.dumps({"access_token": "act.x"}).encode()
    answer = _verifier().verify("POST", "/v1/requests", _signed("POST", "/v1/requests", body), body)
    assert answer == Verified(BACKEND, BACKEND_KEY.access_key_id)
    query = "/v1/users/-000abc/requests?next=b&limit=5"
    assert isinstance(_verifier().verify("GET", query, _signed("GET", query), b""), Verified)


def test_a_wrong_secret_or_a_changed_request_does_not_match_the_signature() -> None:
    body = b'{"access_token": "act.x"}'
    wrong = _signed("POST", "/v1/requests", body, secret="not-the-secret")
    assert _message(_verifier().verify("POST", "/v1/requests", wrong, body)).startswith(
        "The request signature we calculated does not match the signature you provided."
    )
    headers = _signed("POST", "/v1/requests", body)
    for method, target, sent in (
        ("POST", "/v1/requests", b'{"access_token": "act.y"}'),
        ("POST", "/v1/downloads", body),
        ("PUT", "/v1/requests", body),
        ("POST", "/v1/requests?x=1", body),
    ):
        message = _message(_verifier().verify(method, target, headers, sent))
        assert message.startswith("The request signature we calculated does not match"), (method, target)


def test_an_unknown_key_or_a_session_token_is_an_invalid_security_token() -> None:
    unknown = _signed("GET", "/v1/downloads/1", key_id="AKIAUNKNOWN000000000")
    assert _message(_verifier().verify("GET", "/v1/downloads/1", unknown, b"")) == (
        "The security token included in the request is invalid."
    )
    with_token = {**_signed("GET", "/v1/downloads/1"), "X-Amz-Security-Token": ["IQoJb3JpZ2lu"]}
    assert _message(_verifier().verify("GET", "/v1/downloads/1", with_token, b"")) == (
        "The security token included in the request is invalid."
    )


def test_no_authorization_is_missing_its_authentication_token() -> None:
    assert _verifier().verify("GET", "/v1/downloads/1", {"Host": ["x"]}, b"") == MISSING_AUTHENTICATION_TOKEN


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"region": "us-east-1"}, "Credential should be scoped to a valid region, not 'us-east-1'. "),
        ({"service": "execute-apis"}, "Credential should be scoped to correct service: 'execute-api'. "),
        ({"at": datetime(2026, 11, 27, 17, 50, tzinfo=UTC)}, "Signature expired: 20261127T175000Z"),
        ({"at": datetime(2026, 11, 27, 18, 10, tzinfo=UTC)}, "Signature not yet current: 20261127T181000Z"),
    ],
)
def test_a_signature_for_another_scope_or_time_is_refused(change: dict[str, Any], expected: str) -> None:
    headers = _signed("GET", "/v1/downloads/1", **change)
    assert _message(_verifier().verify("GET", "/v1/downloads/1", headers, b"")).startswith(expected)


def test_a_bearer_token_is_not_a_signature() -> None:
    headers = {"Host": ["x"], "Authorization": ["Bearer act.x"]}
    message = _message(_verifier().verify("GET", "/v1/downloads/1", headers, b""))
    assert message.startswith("Invalid key=value pair (missing equal-sign) in Authorization header")
    assert "act.x" not in message
