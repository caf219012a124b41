"""docs/openapi.yaml is the API's contract: a valid document, the template's routes, the real answers.

The answers checked here are made by the service's own code — ``DownloadRecord.to_body()`` in every
status, ``Answer.to_body()`` with a link, a user's page of requests, every error class's ``to_body()``,
and the API handlers' own answers (refusals, the list and the erasure, over in-memory fakes: neither AWS
nor TikTok) — so a field, a status or an error code that changes in the code without the document fails
here. Broken answers must be refused. The security the document declares is the template's (SigV4 on
every route but TikTok's webhook), and the request bodies and parameters it describes are what the
handlers take.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import zipfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import BACKEND, BACKEND_CALLER
from tests.harness.contract import DOCUMENT_PATH, REPO_ROOT, Contract, Operation
from tests.harness.events import (
    api_event,
    delete_event,
    erase_event,
    get_event,
    request_event,
    user_requests_event,
)
from tests.harness.lambda_context import FakeLambdaContext
from tests.unit.fakes import Clock, FakeDownloadRecords, FakeLifecycleQueue, FakeTransfer, Journal
from tiktok_archive.handlers import api, webhook
from tiktok_archive.logic.queries import RecordQueries, UserRequests
from tiktok_archive.models import errors
from tiktok_archive.models.download_record import (
    Answer,
    DownloadRecord,
    DownloadStatus,
    Preparation,
    Progress,
    RecordedError,
)
from tiktok_archive.models.errors import InvalidRequestError, ServiceError
from tiktok_archive.models.inputs import parse_request_id
from tiktok_archive.models.messages import EraseUser
from tiktok_archive.models.paging import (
    DEFAULT_PAGE,
    MAX_PAGE,
    format_position,
    parse_page_size,
    parse_position,
)
from tiktok_archive.models.portability import (
    parse_handed_tokens,
    parse_new_request,
    parse_open_id,
    refuse_unknown_fields,
)
from tiktok_archive.models.tiktok_errors import TikTokApiError
from tiktok_archive.models.zip_manifest import DirectoryLocation, build_manifest
from tiktok_archive.models.zip_tail import ZipTail

TEMPLATE_PATH = REPO_ROOT / "template.yaml"
EVENTS = REPO_ROOT / "events"
REQUEST_ID = 7234567890123456789
INT64_MAX = 2**63 - 1
AT = datetime(2026, 11, 27, 19, 4, 20, tzinfo=UTC)
OPEN_ID = "-000DEMO0a1b2c3d4e5f60718293a4b5c6d"
TOKEN = "act.DEMO7hQ2xK9pLm4Rt8Vw3Yz6Bc1Nf5Gj0Sd-Ua_Ei2Ok7Ph4Tl9Xm3Qr8Wv6Zy1Cb5Dg0Fn-Jp!4667.e1"
REFRESH = "rft.DEMOr9Kq2Lx7Vn4Tb8Wm3Zc6Hd1Pf5Gs0Ja-Ue_Yi2Oo7Rh4Sl9Nk3Xe8Qv6Bt1Cy5Dw0Fm-Jg!4667.e1"
NO_STORE = {"Cache-Control": "no-store", "Content-Type": "application/json"}
GATEWAY = {"Content-Type": "application/json"}  # API Gateway's own answers carry no Cache-Control
# Routes that answer a download record.
RECORD_ROUTES = (
    ("GET", f"/downloads/{REQUEST_ID}"),
    ("DELETE", f"/downloads/{REQUEST_ID}"),
    ("POST", "/downloads"),
)
# Routes that call TikTok (the user's tokens from the body, or those the service holds to cancel).
TIKTOK_ROUTES = (("POST", "/requests"), ("POST", "/downloads"), ("DELETE", f"/downloads/{REQUEST_ID}"))
# Routes that ask TikTok nothing: no TikTok code, no 401, no 502 may ever be answered there.
READ_ROUTES = (
    ("GET", f"/downloads/{REQUEST_ID}"),
    ("GET", f"/users/{OPEN_ID}/requests"),
    ("DELETE", f"/users/{OPEN_ID}"),
)
SIGNED_ROUTES = (*TIKTOK_ROUTES, *READ_ROUTES)
# TikTok's documented codes (models/errors.py passes them through with these statuses).
TIKTOK_CODES = {
    "invalid_params": 400,
    "scope_permission_missed": 400,
    "access_token_invalid": 401,
    "scope_not_authorized": 401,
    "rate_limit_exceeded": 429,
    "internal_error": 502,
}
# Codes of the taxonomy that no API route answers: recorded in a failed record's ``error`` only
# (preparation_timed_out), internal to the queues (handed_back), or the base class's default.
NOT_ANSWERED_BY_A_ROUTE = {"preparation_timed_out", "handed_back", "transfer_failed"}


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract.load()


# -- the document -------------------------------------------------------------------------------------
def test_the_document_is_a_valid_openapi_3_0_document(contract: Contract) -> None:
    assert contract.source == DOCUMENT_PATH
    assert contract.version == "3.0.3"
    assert contract.validate_document() == []


def test_a_broken_document_is_reported(contract: Contract) -> None:
    broken = json.loads(json.dumps(contract.document))
    del broken["paths"]["/downloads"]["post"]["responses"]
    broken["components"]["schemas"]["Download"]["properties"]["status"] = {
        "$ref": "#/components/schemas/Nope"
    }
    problems = Contract(broken).validate_document()
    assert problems
    assert any("responses" in problem for problem in problems)


# -- the template's routes ------------------------------------------------------------------------------
# A YAML loader that keeps CloudFormation's short tags as ``{"!Tag": value}`` instead of failing (built
# with type(): PyYAML may have no type stubs here).
_CloudFormationLoader: Any = type("_CloudFormationLoader", (yaml.SafeLoader,), {})


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {f"!{suffix}": value}


_CloudFormationLoader.add_multi_constructor("!", _tagged)


def _template() -> dict[str, Any]:
    document: dict[str, Any] = yaml.load(
        TEMPLATE_PATH.read_text(encoding="utf-8"), Loader=_CloudFormationLoader
    )
    return document


def _api_events(template: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any], str]]:
    """Every ``Type: Api`` event of a function: method, path, its properties, the function's name."""
    for name, resource in template["Resources"].items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        for event in (resource.get("Properties", {}).get("Events") or {}).values():
            if event.get("Type") == "Api":
                properties = event["Properties"]
                yield properties["Method"].upper(), properties["Path"], properties, name


def _authorizer(template: dict[str, Any], properties: dict[str, Any]) -> str:
    """The route's authorizer: its own ``Auth.Authorizer``, else its API's ``DefaultAuthorizer``."""
    auth = properties.get("Auth") or {}
    if "Authorizer" in auth:
        return str(auth["Authorizer"])
    api_id = (properties.get("RestApiId") or {}).get("!Ref")
    api_auth = template["Resources"][api_id]["Properties"].get("Auth", {}) if api_id else {}
    return str(api_auth.get("DefaultAuthorizer", "NONE"))


def test_every_api_route_of_the_template_is_documented_and_the_document_has_no_other(
    contract: Contract,
) -> None:
    template_routes = {(method, path) for method, path, _, _ in _api_events(_template())}
    assert template_routes, "template.yaml declares no Api events"
    assert contract.routes() == template_routes


def test_sigv4_is_required_exactly_where_the_template_authorizes_with_aws_iam(contract: Contract) -> None:
    template = _template()
    authorizers = set()
    for method, path, properties, _ in _api_events(template):
        authorizer = _authorizer(template, properties)
        authorizers.add(authorizer)
        requirements = contract.security(contract.operation(method, path))
        if authorizer == "AWS_IAM":
            assert requirements == [{"awsSigv4": []}], f"{method} {path} must require SigV4 (and only it)"
        else:
            assert (method, path, requirements) == ("POST", "/webhooks/tiktok", [])
    assert authorizers == {"AWS_IAM", "NONE"}


def test_the_one_security_scheme_is_sigv4_as_aws_writes_it(contract: Contract) -> None:
    schemes = contract.document["components"]["securitySchemes"]
    assert set(schemes) == {"awsSigv4"}
    sigv4 = schemes["awsSigv4"]
    assert {key: value for key, value in sigv4.items() if key != "description"} == {
        "type": "apiKey",
        "name": "Authorization",
        "in": "header",
        "x-amazon-apigateway-authtype": "awsSigv4",
    }
    assert "execute-api:Invoke" in sigv4["description"]
    assert "caller_not_identified" in sigv4["description"]


def test_the_document_no_longer_speaks_of_an_api_key_or_a_bearer_token() -> None:
    text = DOCUMENT_PATH.read_text(encoding="utf-8").lower()
    for gone in ("x-api-key", "bearer", "api key", "usage plan", "apikeyid"):
        assert gone not in text, gone


def test_the_servers_name_the_template_stage(contract: Contract) -> None:
    template = _template()
    stages = {
        resource["Properties"]["StageName"]
        for resource in template["Resources"].values()
        if resource.get("Type") == "AWS::Serverless::Api"
    }
    assert len(stages) == 1
    (stage,) = stages
    assert all(server["url"].endswith(f"/{stage}") for server in contract.document["servers"])


def test_the_webhook_route_requires_tiktoks_signature_header(contract: Contract) -> None:
    parameters = [
        contract.resolve(parameter)
        for parameter in contract.operation("POST", "/webhooks/tiktok").spec.get("parameters", [])
    ]
    signature = next(p for p in parameters if p["name"] == "TikTok-Signature")
    assert (signature["in"], signature["required"]) == ("header", True)
    pattern = re.compile(signature["schema"]["pattern"])
    assert pattern.fullmatch(
        json.loads((EVENTS / "api-webhook-download-ready.json").read_text())["headers"]["TikTok-Signature"]
    )
    assert not pattern.fullmatch("t=1,s=abc")


# -- the document's own examples ------------------------------------------------------------------------
def _example_headers(contract: Contract, response: Mapping[str, Any]) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    for name, spec in (response.get("headers") or {}).items():
        header = contract.resolve(spec)
        if header.get("required"):
            schema = header["schema"]
            headers[name] = header.get("example") or schema.get("example") or schema["enum"][0]
    return headers


def _examples(contract: Contract, media: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    if "example" in media:
        yield "example", media["example"]
    for name, example in (media.get("examples") or {}).items():
        yield name, contract.resolve(example)["value"]


def _concrete(template: str) -> str:
    return template.replace("{request_id}", str(REQUEST_ID)).replace("{open_id}", OPEN_ID)


def test_every_answer_example_in_the_document_conforms_to_its_answer(contract: Contract) -> None:
    seen = 0
    for operation in contract.operations:
        for status in operation.statuses:
            found = contract.response(operation, status)
            assert found is not None
            _, response = found
            for name, value in _examples(contract, response.get("content", {}).get("application/json", {})):
                seen += 1
                headers = _example_headers(contract, response)
                problems = contract.check(
                    operation.method, _concrete(operation.template), status, headers, value
                )
                assert problems == [], f"{operation.label} {status} example {name}"
    assert seen >= 10


def test_every_request_body_example_in_the_document_conforms_to_its_schema(contract: Contract) -> None:
    for operation in contract.operations:
        body = contract.resolve(operation.spec.get("requestBody", {}))
        for media in body.get("content", {}).values():
            for name, value in _examples(contract, media):
                assert contract.check_schema(media["schema"], value) == [], f"{operation.label} {name}"


# -- request bodies: what the handlers accept is what the document says -------------------------------
@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("7234567890123456789", True),
        (str(INT64_MAX), True),
        (INT64_MAX, True),
        (1, True),
        ("00000000000000000001", True),
        (7.2345e18, False),
        (True, False),
        (None, False),
        (INT64_MAX + 1, False),
        (0, False),
        ("-1", False),
        ("72345678901234567890123", False),
        ("1e3", False),
    ],
)
def test_the_download_request_schema_takes_the_request_ids_the_handler_takes(
    contract: Contract, value: Any, valid: bool
) -> None:
    assert _download_body_taken({"request_id": value, "access_token": TOKEN}) is valid
    problems = contract.check_schema("DownloadRequest", {"request_id": value, "access_token": TOKEN})
    assert (problems == []) is valid, problems


def _download_body_taken(body: dict[str, Any]) -> bool:
    """Whether ``POST /downloads`` takes ``body``, as its handler reads it (before any service)."""
    try:
        refuse_unknown_fields(body, api._DOWNLOAD_FIELDS)
        parse_request_id(body.get("request_id"))
        parse_handed_tokens(body)
    except (InvalidRequestError, errors.MissingTokenError):
        return False
    return True


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"request_id": "1", "access_token": TOKEN}, True),
        ({"request_id": "1", "access_token": TOKEN, "refresh_token": REFRESH}, True),
        ({"request_id": "1", "access_token": TOKEN, "refresh_token": REFRESH, "open_id": OPEN_ID}, True),
        ({"request_id": "1", "access_token": TOKEN, "refresh_token": None, "open_id": None}, True),
        ({"request_id": "1", "access_token": "act.3.x" + "y" * 2041}, True),
        ({"request_id": "1"}, False),
        ({"request_id": "1", "access_token": None}, False),
        ({"request_id": "1", "access_token": ""}, False),
        ({"request_id": "1", "access_token": "act.a b"}, False),
        ({"request_id": "1", "access_token": "act.é"}, False),
        ({"request_id": "1", "access_token": "a" * 2049}, False),
        ({"request_id": "1", "access_token": 12345}, False),
        ({"request_id": "1", "access_token": TOKEN, "open_id": OPEN_ID}, False),
        ({"request_id": "1", "access_token": TOKEN, "refresh_token": None, "open_id": OPEN_ID}, False),
        ({"request_id": "1", "access_token": TOKEN, "refresh_token": "rft. space"}, False),
        ({"request_id": "1", "access_token": TOKEN, "refresh_token": REFRESH, "open_id": "o" * 257}, False),
        ({"request_id": "1", "access_token": TOKEN, "prefer": "respond-async"}, False),
        ({"request_id": "1", "access_token": TOKEN, "data_format": "json"}, False),
    ],
)
def test_the_download_request_schema_takes_the_bodies_the_handler_takes(
    contract: Contract, body: dict[str, Any], valid: bool
) -> None:
    assert _download_body_taken(body) is valid
    problems = contract.check_schema("DownloadRequest", body)
    assert (problems == []) is valid, problems


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"access_token": TOKEN}, True),
        ({"access_token": TOKEN, "data_format": "text", "categories": ["video", "profile"]}, True),
        ({"access_token": TOKEN, "refresh_token": "rft.abc!1234.e1", "open_id": "-000abc"}, True),
        ({"access_token": TOKEN, "refresh_token": "rft.abc!1234.e1"}, True),
        ({"access_token": TOKEN, "refresh_token": None, "open_id": None}, True),
        ({}, False),
        ({"data_format": "json"}, False),
        ({"access_token": "act. with a space"}, False),
        ({"access_token": TOKEN, "format": "json"}, False),
        ({"access_token": TOKEN, "request_id": "1"}, False),
        ({"access_token": TOKEN, "data_format": "csv"}, False),
        ({"access_token": TOKEN, "categories": []}, False),
        ({"access_token": TOKEN, "categories": ["video", "video"]}, False),
        ({"access_token": TOKEN, "categories": ["music"]}, False),
        ({"access_token": TOKEN, "refresh_token": "rft. with a space"}, False),
        ({"access_token": TOKEN, "refresh_token": "r" * 2049}, False),
        ({"access_token": TOKEN, "refresh_token": REFRESH, "open_id": "o" * 257}, False),
        ({"access_token": TOKEN, "open_id": "-000abc"}, False),
        ({"access_token": TOKEN, "refresh_token": None, "open_id": "-000abc"}, False),
    ],
)
def test_the_new_request_schema_takes_what_parse_new_request_takes(
    contract: Contract, body: dict[str, Any], valid: bool
) -> None:
    try:
        parse_new_request(body)
        accepted = True
    except (InvalidRequestError, errors.MissingTokenError):
        accepted = False
    assert accepted is valid
    problems = contract.check_schema("NewRequest", body)
    assert (problems == []) is valid, problems


# -- path and query parameters: what the handlers accept is what the document says -------------------
def _parameter_schema(contract: Contract, method: str, template: str, where: str, name: str) -> Any:
    return contract.parameters(contract.operation(method, template))[(where, name)]["schema"]


@pytest.mark.parametrize(
    "value", [OPEN_ID, "-", "o" * 256, "o" * 257, "", "a b", "ünïcode", "tab\there", "!#$%&'*+-.^_`|~"]
)
def test_the_open_id_path_parameter_takes_what_parse_open_id_takes(contract: Contract, value: str) -> None:
    try:
        parse_open_id(value)
        taken = True
    except InvalidRequestError:
        taken = False
    for method, template in (("GET", "/users/{open_id}/requests"), ("DELETE", "/users/{open_id}")):
        schema = _parameter_schema(contract, method, template, "path", "open_id")
        assert (contract.check_schema(schema, value) == []) is taken, (method, value)


@pytest.mark.parametrize(
    "value", ["1", "20", "100", "020", "0", "101", "-1", "+5", "1.5", "", " 5", "x", "٣"]
)
def test_the_limit_query_parameter_takes_what_parse_page_size_takes(contract: Contract, value: str) -> None:
    schema = _parameter_schema(contract, "GET", "/users/{open_id}/requests", "query", "limit")
    assert (schema["default"], schema["maximum"]) == (DEFAULT_PAGE, MAX_PAGE)
    try:
        parse_page_size(value)
        taken = True
    except InvalidRequestError:
        taken = False
    # A query parameter is text: the document's integer is its decimal digits.
    as_sent: Any = int(value) if value.isascii() and value.isdigit() else value
    assert (contract.check_schema(schema, as_sent) == []) is taken
    assert parse_page_size(None) == DEFAULT_PAGE


@pytest.mark.parametrize(
    "position",
    [("2026-11-27T19:04:20Z", REQUEST_ID), ("1970-01-01T00:00:00Z", 1), ("9999-12-31T23:59:59Z", INT64_MAX)],
)
def test_every_next_token_the_api_gives_is_a_next_the_document_takes_back(
    contract: Contract, position: tuple[str, int]
) -> None:
    token = format_position(position)
    assert token is not None
    assert parse_position(token) == position
    schema = _parameter_schema(contract, "GET", "/users/{open_id}/requests", "query", "next")
    assert contract.check_schema(schema, token) == []
    assert contract.check_schema(contract.schema("UserRequests")["properties"]["next"], token) == []


# -- records, as the models write them -----------------------------------------------------------------
def _manifest() -> dict[str, Any]:
    """A real manifest: a zip built here, read back as the transfer reads it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("user_data_tiktok.json", b'{"profile": 1}' * 200)
        archive.writestr("Posts/video 1.mp4", bytes(range(256)) * 64)
        archive.writestr("../escape\x1b.txt", b"x")
    tail = ZipTail()
    tail.feed(buffer.getvalue())
    tail.verify()
    assert tail.directory is not None
    directory = tail.held_directory(4 * 1024 * 1024)
    assert directory is not None
    return build_manifest(tail.directory, directory)


def _record(status: DownloadStatus) -> DownloadRecord:
    """A record in ``status`` with what a record in it really holds."""
    prepared = Preparation(
        data_format="json",
        categories=("all_data",),
        tiktok_status="pending",
        apply_time=AT,
        collect_time=None,
        next_check_at=AT + timedelta(seconds=60),
        checks=1,
        give_up_at=AT + timedelta(days=7),
    )
    base = DownloadRecord(request_id=REQUEST_ID, status=status, created_at=AT, updated_at=AT, attempts=0)
    stored = dataclasses.replace(
        base, bucket="tiktok-archive-archivebucket-1a2b3c", key=f"archives/{REQUEST_ID}.zip"
    )
    match status:
        case DownloadStatus.WAITING:
            return dataclasses.replace(base, preparation=prepared, user_openid="-000abc")
        case DownloadStatus.QUEUED:
            return dataclasses.replace(base, lease_expires_at=AT + timedelta(minutes=15))
        case DownloadStatus.IN_PROGRESS:
            progress = Progress(bytes_received=16 * 1048576, parts_uploaded=2, mib_per_second=2.7, at=AT)
            return dataclasses.replace(stored, attempts=1, progress=progress)
        case DownloadStatus.COMPLETED:
            return dataclasses.replace(
                stored,
                attempts=1,
                size_bytes=20971659,
                checksum="a76oww==",
                completed_at=AT + timedelta(seconds=8),
                manifest=_manifest(),
                preparation=prepared,
            )
        case DownloadStatus.FAILED:
            failure = TikTokApiError(
                "internal_error", "TikTok failed", log_id="20261127190420010203040506", upstream_status=500
            )
            error = RecordedError(failure.error_code, failure.message, failure.log_id, failure.is_transient)
            return dataclasses.replace(stored, attempts=2, error=error)
        case _:  # expired, cancelled, revoked: tombstones
            return dataclasses.replace(base, preparation=prepared)


@pytest.mark.parametrize("status", list(DownloadStatus))
@pytest.mark.parametrize(("method", "path"), RECORD_ROUTES)
def test_a_record_in_every_status_conforms(
    contract: Contract, status: DownloadStatus, method: str, path: str
) -> None:
    body = _record(status).to_body()
    assert contract.check(method, path, 200, NO_STORE, body) == []
    assert contract.check(method, path, 200, NO_STORE, json.dumps(body).encode()) == []


def test_the_status_enum_is_the_models_one(contract: Contract) -> None:
    assert contract.schema("DownloadStatus")["enum"] == [status.value for status in DownloadStatus]


def test_the_record_documents_every_field_to_body_writes(contract: Contract) -> None:
    written: set[str] = set()
    for status in DownloadStatus:
        written |= set(Answer(_record(status), "https://example/x", AT).to_body())
    assert written == set(contract.schema("Download")["properties"])


def test_a_completed_answer_with_its_link_conforms(contract: Contract) -> None:
    url = (
        f"https://tiktok-archive-archivebucket-1a2b3c.s3.eu-west-1.amazonaws.com/archives/{REQUEST_ID}.zip"
        "?response-content-disposition=attachment&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=0123abcd"
    )
    body = Answer(_record(DownloadStatus.COMPLETED), url, AT + timedelta(hours=1)).to_body()
    assert {"url", "expires_at", "manifest"} <= set(body)
    for method, path in RECORD_ROUTES:
        assert contract.check(method, path, 200, NO_STORE, body) == []


def test_manifests_of_damaged_and_oversized_directories_conform(contract: Contract) -> None:
    damaged = build_manifest(DirectoryLocation(entries=3, offset=0, size=64), b"PK\x01\x02" + b"\0" * 60)
    cut = build_manifest(DirectoryLocation(entries=10, offset=0, size=10 * 1024 * 1024), b"")
    for manifest in (damaged, cut, _manifest()):
        assert contract.check_schema("Manifest", manifest) == [], manifest
    assert damaged["truncated"] is True


def test_a_new_request_answers_202_with_its_location(contract: Contract) -> None:
    body = _record(DownloadStatus.WAITING).to_body()
    assert "next_check_at" in body
    headers = {**NO_STORE, "Location": f"/v1/downloads/{REQUEST_ID}"}
    assert contract.check("POST", "/requests", 202, headers, body) == []
    assert contract.check("POST", "/requests", 202, NO_STORE, body) == [
        "POST /requests 202: missing required header Location"
    ]


@pytest.mark.parametrize("status", [DownloadStatus.QUEUED, DownloadStatus.IN_PROGRESS])
def test_an_async_download_answers_202_with_location_and_preference_applied(
    contract: Contract, status: DownloadStatus
) -> None:
    body = Answer(_record(status)).to_body()
    headers = {**NO_STORE, "Location": f"/v1/downloads/{REQUEST_ID}", "Preference-Applied": "respond-async"}
    assert contract.check("POST", "/downloads", 202, headers, body) == []
    without = {k: v for k, v in headers.items() if k != "Preference-Applied"}
    assert contract.check("POST", "/downloads", 202, without, body) == [
        "POST /downloads 202: missing required header Preference-Applied"
    ]


def test_a_page_of_a_users_requests_in_every_status_conforms(contract: Contract) -> None:
    records = [_record(status) for status in DownloadStatus]
    page = UserRequests(OPEN_ID, records, format_position(("2026-11-27T19:04:20Z", REQUEST_ID)))
    path = f"/users/{OPEN_ID}/requests"
    assert contract.check("GET", path, 200, NO_STORE, page.to_body()) == []
    last = UserRequests(OPEN_ID, [], None).to_body()
    assert last == {"open_id": OPEN_ID, "requests": [], "next": None}
    assert contract.check("GET", path, 200, NO_STORE, last) == []


def test_a_listed_request_never_carries_a_link(contract: Contract) -> None:
    page = UserRequests(OPEN_ID, [], None).to_body()
    page["requests"] = [_completed()]
    (problem,) = contract.check("GET", f"/users/{OPEN_ID}/requests", 200, NO_STORE, page)
    assert "$.requests[0]" in problem


def test_the_erasure_answers_202_erasing(contract: Contract) -> None:
    body = {"open_id": OPEN_ID, "status": "erasing"}
    assert contract.check("DELETE", f"/users/{OPEN_ID}", 202, NO_STORE, body) == []
    assert contract.check("DELETE", f"/users/{OPEN_ID}", 202, NO_STORE, {**body, "status": "erased"})


@pytest.mark.parametrize("outcome", ["queued", "duplicate", "ignored"])
def test_the_webhook_answers_conform(contract: Contract, outcome: str) -> None:
    assert contract.check("POST", "/webhooks/tiktok", 200, NO_STORE, {"status": outcome}) == []


# -- errors, as the taxonomy writes them ----------------------------------------------------------------
def _error_classes() -> list[type[ServiceError]]:
    found: list[type[ServiceError]] = []
    pending: list[type[ServiceError]] = [ServiceError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted({cls for cls in found if cls is not TikTokApiError}, key=lambda cls: cls.__name__)


def _error(cls: type[ServiceError]) -> ServiceError:
    if cls is errors.TokenRefreshInProgressError:
        return cls("another invocation is refreshing this user's tokens")
    return cls("what went wrong, for the caller")


def _taxonomy() -> dict[str, int]:
    """Every code of models/errors.py with the status it is answered with."""
    statuses: dict[str, set[int]] = {}
    for cls in _error_classes():
        error = _error(cls)
        statuses.setdefault(error.error_code, set()).add(error.status)
    for code in TIKTOK_CODES:
        statuses.setdefault(code, set()).add(
            TikTokApiError(code, "m", log_id=None, upstream_status=200).status
        )
    assert all(len(found) == 1 for found in statuses.values()), statuses
    return {code: found.pop() for code, found in statuses.items()}


def _listed(contract: Contract) -> Iterator[tuple[Operation, str, list[str]]]:
    for operation in contract.operations:
        for status in operation.statuses:
            found = contract.response(operation, status)
            assert found is not None
            yield operation, status, list(found[1].get("x-error-codes", []))


def test_tiktoks_documented_codes_keep_their_status(contract: Contract) -> None:
    for code, status in TIKTOK_CODES.items():
        assert TikTokApiError(code, "m", log_id=None, upstream_status=400).status == status


def test_the_error_code_table_lists_every_code_with_its_status(contract: Contract) -> None:
    description = contract.schema("ErrorCode")["description"]
    table = {
        code: int(status) for code, status in re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", description, re.M)
    }
    assert table == _taxonomy()


def test_every_code_a_route_lists_is_answered_with_that_routes_status(contract: Contract) -> None:
    taxonomy = _taxonomy()
    for operation, status, codes in _listed(contract):
        for code in codes:
            assert code in taxonomy, f"{operation.label} {status} lists {code}, which models/errors.py lacks"
            assert str(taxonomy[code]) == status, f"{operation.label} lists {code} under {status}"


def test_every_code_the_api_can_answer_is_listed_by_some_route(contract: Contract) -> None:
    listed = {code for _, _, codes in _listed(contract) for code in codes}
    assert listed == set(_taxonomy()) - NOT_ANSWERED_BY_A_ROUTE


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda cls: cls.__name__)
def test_every_error_class_body_conforms_on_the_routes_that_answer_it(
    contract: Contract, cls: type[ServiceError]
) -> None:
    error = _error(cls)
    body = error.to_body()
    assert contract.check_schema("Error", body) == []
    headers = {**NO_STORE, "Retry-After": error.retry_after or "30"}
    for operation, status, codes in _listed(contract):
        if error.error_code in codes:
            assert (
                contract.check(operation.method, _concrete(operation.template), status, headers, body) == []
            )


@pytest.mark.parametrize(("code", "status"), sorted(TIKTOK_CODES.items()))
@pytest.mark.parametrize(("method", "path"), TIKTOK_ROUTES)
def test_tiktoks_refusals_with_their_log_id_conform_on_every_route_that_calls_tiktok(
    contract: Contract, code: str, status: int, method: str, path: str
) -> None:
    error = TikTokApiError(
        code, "TikTok's message", log_id="202611271904200102030405", upstream_status=status
    )
    problems = contract.check(method, path, error.status, {**NO_STORE, "Retry-After": "60"}, error.to_body())
    if code == "invalid_params" and method == "DELETE":
        # TikTok's cancel endpoint says the request already ended: the cancellation goes on (200).
        (problem,) = problems
        assert "error code 'invalid_params' is not documented" in problem
    else:
        assert problems == []


@pytest.mark.parametrize(("method", "path"), READ_ROUTES)
def test_the_routes_that_ask_tiktok_nothing_answer_no_tiktok_failure(
    contract: Contract, method: str, path: str
) -> None:
    operation = contract.match(method, path)
    assert operation is not None
    assert not {"401", "409", "410", "502"} & set(operation.statuses), operation.label
    listed = {code for candidate, _, codes in _listed(contract) if candidate == operation for code in codes}
    tiktoks = set(TIKTOK_CODES) | {"reauthorization_required", "app_credentials_invalid", "open_id_mismatch"}
    assert not listed & tiktoks, (operation.label, listed)
    if operation.template.startswith("/users"):
        assert "not_found" not in listed  # an unknown user is an empty list; an erasure is idempotent


@pytest.mark.parametrize("upstream", [200, 302, 400, 401, 403, 404, 409, 429, 500, 503])
@pytest.mark.parametrize(("method", "path"), TIKTOK_ROUTES)
def test_an_unknown_tiktok_code_passes_through_with_a_documented_status(
    contract: Contract, upstream: int, method: str, path: str
) -> None:
    error = TikTokApiError("some_new_code", "TikTok's message", log_id=None, upstream_status=upstream)
    assert contract.check(method, path, error.status, NO_STORE, error.to_body()) == []


# -- the handlers' own answers (no AWS, no TikTok needed) -----------------------------------------------
class _NotReached:
    """A service the answer under test must not use (its factory may be called, its methods not)."""

    def __getattr__(self, name: str) -> Any:
        def reached(*_: Any, **__: Any) -> Any:
            raise AssertionError(f"{name} was called: the handler should have answered before")

        return reached


@dataclasses.dataclass
class _Services:
    records: FakeDownloadRecords
    queue: FakeLifecycleQueue


@pytest.fixture
def services(monkeypatch: pytest.MonkeyPatch) -> _Services:
    """The API handler over in-memory fakes: its reads and the erasure's queue; nothing that calls TikTok."""
    journal = Journal()
    records = FakeDownloadRecords(Clock(), journal)
    queue = FakeLifecycleQueue(journal)
    queries = RecordQueries(records, FakeTransfer(journal))
    monkeypatch.setattr(api, "record_queries", lambda: queries)
    monkeypatch.setattr(api, "lifecycle_queue", lambda: queue)
    monkeypatch.setattr(api, "add_request", _NotReached)
    monkeypatch.setattr(api, "cancel_request", _NotReached)
    monkeypatch.setattr(api, "caller_downloads", _NotReached)
    return _Services(records, queue)


def _event(name: str, **changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    event.update(changes)
    return event


def _answer(contract: Contract, app: Any, event: dict[str, Any]) -> tuple[int, list[str], Any]:
    """The handler's answer to ``event``: its status, what the contract finds wrong with it, its body."""
    answer = app.resolve(event, FakeLambdaContext())
    headers: dict[str, list[str]] = {k: list(v) for k, v in (answer.get("multiValueHeaders") or {}).items()}
    for name, value in (answer.get("headers") or {}).items():
        headers.setdefault(name, []).append(value)
    status = int(answer["statusCode"])
    problems = contract.check(event["httpMethod"], event["path"], status, headers, answer["body"])
    return status, problems, json.loads(answer["body"])


def _answer_problems(contract: Contract, app: Any, event: dict[str, Any]) -> tuple[int, list[str]]:
    status, problems, _ = _answer(contract, app, event)
    return status, problems


def _with_bearer_header(event: dict[str, Any]) -> dict[str, Any]:
    """The old way (``Authorization: Bearer``) is no way: the token is read from the body only."""
    event["headers"]["Authorization"] = f"Bearer {TOKEN}"
    event["multiValueHeaders"]["Authorization"] = [f"Bearer {TOKEN}"]
    return event


@pytest.mark.parametrize(
    ("event", "status", "code"),
    [
        pytest.param(_event("api-missing-token"), 400, "missing_token", id="no-token"),
        pytest.param(api_event("1", "act.a b"), 400, "missing_token", id="token-with-a-space"),
        pytest.param(
            _with_bearer_header(api_event("1", None)), 400, "missing_token", id="bearer-header-is-not-read"
        ),
        pytest.param(_event("api-invalid-request-id"), 400, "invalid_request", id="float-request-id"),
        pytest.param(_event("api-not-json"), 400, "invalid_request", id="not-json"),
        pytest.param(_event("api-download", body=None), 400, "invalid_request", id="no-body"),
        pytest.param(api_event(0, TOKEN), 400, "invalid_request", id="request-id-0"),
        pytest.param(
            api_event(True, TOKEN, prefer="respond-async"), 400, "invalid_request", id="async-bool-id"
        ),
        pytest.param(
            api_event(body=json.dumps({"request_id": "1", "access_token": TOKEN, "format": "json"})),
            400,
            "invalid_request",
            id="download-unknown-field",
        ),
        pytest.param(api_event("1", TOKEN, open_id=OPEN_ID), 400, "invalid_request", id="open-id-alone"),
        pytest.param(
            request_event({"format": "json"}, TOKEN), 400, "invalid_request", id="new-unknown-field"
        ),
        pytest.param(request_event({"categories": []}, TOKEN), 400, "invalid_request", id="new-no-category"),
        pytest.param(request_event("[]", None), 400, "invalid_request", id="new-not-an-object"),
        pytest.param(request_event({}, None), 400, "missing_token", id="new-no-token"),
        pytest.param(
            request_event({}, TOKEN, open_id=OPEN_ID), 400, "invalid_request", id="new-open-id-alone"
        ),
        pytest.param(get_event("abc"), 400, "invalid_request", id="get-not-digits"),
        pytest.param(delete_event(INT64_MAX + 1), 400, "invalid_request", id="delete-past-int64"),
        pytest.param(user_requests_event(OPEN_ID, limit="0"), 400, "invalid_request", id="list-limit-0"),
        pytest.param(user_requests_event(OPEN_ID, limit="101"), 400, "invalid_request", id="list-limit-101"),
        pytest.param(
            user_requests_event(OPEN_ID, next_page="bm90IGEgdG9rZW4"),
            400,
            "invalid_request",
            id="list-bad-next",
        ),
        pytest.param(user_requests_event("o" * 257), 400, "invalid_request", id="list-open-id-too-long"),
        pytest.param(erase_event("o" * 257), 400, "invalid_request", id="erase-open-id-too-long"),
        pytest.param(
            api_event("1", TOKEN, caller=None), 403, "caller_not_identified", id="download-no-caller"
        ),
        pytest.param(request_event({}, TOKEN, caller=None), 403, "caller_not_identified", id="new-no-caller"),
        pytest.param(get_event(REQUEST_ID, caller=None), 403, "caller_not_identified", id="get-no-caller"),
        pytest.param(
            delete_event(REQUEST_ID, caller=None), 403, "caller_not_identified", id="delete-no-caller"
        ),
        pytest.param(
            user_requests_event(OPEN_ID, caller=None), 403, "caller_not_identified", id="list-no-caller"
        ),
        pytest.param(erase_event(OPEN_ID, caller=None), 403, "caller_not_identified", id="erase-no-caller"),
    ],
)
def test_the_api_handlers_refusals_conform(
    contract: Contract, services: _Services, event: dict[str, Any], status: int, code: str
) -> None:
    answered, problems, body = _answer(contract, api.app, event)
    assert problems == []
    assert (answered, body["error"]["code"]) == (status, code)
    assert services.records.items == {}
    assert services.queue.messages == []


def test_the_handlers_page_of_a_users_requests_conforms_and_shows_only_the_callers(
    contract: Contract, services: _Services
) -> None:
    for offset, status in enumerate(DownloadStatus):
        record = dataclasses.replace(
            _record(status),
            request_id=REQUEST_ID - offset,
            created_at=AT + timedelta(minutes=offset),
            caller=BACKEND_CALLER,
            user_openid=OPEN_ID,
        )
        services.records.items[record.request_id] = record
    other = dataclasses.replace(
        _record(DownloadStatus.COMPLETED),
        request_id=1,
        caller="arn:aws:iam::123456789012:role/x",
        user_openid=OPEN_ID,
    )
    services.records.items[other.request_id] = other
    pages: list[dict[str, Any]] = []
    next_page = None
    while True:
        event = user_requests_event(OPEN_ID, limit="3", next_page=next_page)
        answered, problems, page = _answer(contract, api.app, event)
        assert (answered, problems) == (200, [])
        pages.append(page)
        next_page = page["next"]
        if next_page is None:
            break
    assert [len(page["requests"]) for page in pages] == [3, 3, 2]
    listed = [request["request_id"] for page in pages for request in page["requests"]]
    assert listed == [str(REQUEST_ID - offset) for offset in reversed(range(len(DownloadStatus)))]
    assert "1" not in listed


def test_the_handlers_erasure_answer_conforms(contract: Contract, services: _Services) -> None:
    assert _answer_problems(contract, api.app, erase_event(OPEN_ID, caller=BACKEND)) == (202, [])
    assert [message for message, _ in services.queue.messages] == [EraseUser(BACKEND_CALLER, OPEN_ID)]


def test_the_webhook_handlers_refusal_of_an_oversized_body_conforms(contract: Contract) -> None:
    event = _event("api-webhook-download-ready", body="x" * 70_000)
    assert _answer_problems(contract, webhook.app, event) == (413, [])


def test_the_handlers_unknown_route_answer_is_outside_the_contract(contract: Contract) -> None:
    # In AWS, API Gateway answers unknown routes itself (403 Missing Authentication Token).
    event = _event("api-get-download", path="/nowhere", resource="/nowhere")
    status, problems = _answer_problems(contract, api.app, event)
    assert (status, problems) == (404, ["GET /nowhere: undocumented path"])


# -- broken answers are refused --------------------------------------------------------------------------
def _completed() -> dict[str, Any]:
    return Answer(_record(DownloadStatus.COMPLETED), "https://example.com/a.zip", AT).to_body()


def _problems(
    contract: Contract, body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> list[str]:
    return contract.check(
        "GET", f"/downloads/{REQUEST_ID}", status, NO_STORE if headers is None else headers, body
    )


def test_a_numeric_request_id_is_refused(contract: Contract) -> None:
    problems = _problems(contract, {**_completed(), "request_id": REQUEST_ID})
    assert problems == [
        f"GET /downloads/{{request_id}} 200: body: $.request_id: {REQUEST_ID} is not of type 'string'"
    ]


def test_a_request_id_that_is_not_19_digits_is_refused(contract: Contract) -> None:
    assert _problems(contract, {**_completed(), "request_id": "72345678901234567890"})
    assert _problems(contract, {**_completed(), "request_id": "-1"})


def test_a_missing_status_is_refused(contract: Contract) -> None:
    body = _completed()
    del body["status"]
    assert _problems(contract, body) == [
        "GET /downloads/{request_id} 200: body: $: 'status' is a required property"
    ]


def test_an_unknown_status_is_refused(contract: Contract) -> None:
    (problem,) = _problems(contract, {**_completed(), "status": "paused"})
    assert "$.status: 'paused' is not one of" in problem


def test_an_undocumented_field_and_a_null_timestamp_are_refused(contract: Contract) -> None:
    assert _problems(contract, {**_completed(), "owner": "someone"})
    assert _problems(contract, {**_completed(), "created_at": None})
    assert _problems(contract, {**_completed(), "created_at": "2026-11-27 19:04:20"})


def test_an_error_without_code_is_refused(contract: Contract) -> None:
    body = {"error": {"message": "no download of this request_id is known to this caller", "log_id": None}}
    assert _problems(contract, body, 404) == [
        "GET /downloads/{request_id} 404: body: $.error: 'code' is a required property"
    ]


def test_an_error_with_an_extra_field_or_a_bad_log_id_is_refused(contract: Contract) -> None:
    error = errors.DownloadNotFoundError("m").to_body()
    assert _problems(contract, {"error": {**error["error"], "transient": False}}, 404)
    assert _problems(contract, {"error": {**error["error"], "log_id": "has spaces"}}, 404)


def test_a_known_error_code_under_another_status_is_refused(contract: Contract) -> None:
    body = errors.DownloadNotFoundError("m").to_body()
    (problem,) = _problems(contract, body, 503)
    assert "error code 'not_found' is not documented for this answer" in problem
    # The old answer to a missing token (401) is refused: it is 400 now.
    (problem,) = contract.check("POST", "/downloads", 401, NO_STORE, errors.MissingTokenError("m").to_body())
    assert "error code 'missing_token' is not documented for this answer" in problem


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/requests", 410),
        ("POST", "/requests", 200),
        ("GET", f"/downloads/{REQUEST_ID}", 202),
        ("GET", f"/downloads/{REQUEST_ID}", 401),
        ("GET", f"/downloads/{REQUEST_ID}", 409),
        ("GET", f"/downloads/{REQUEST_ID}", 502),
        ("DELETE", f"/downloads/{REQUEST_ID}", 507),
        ("GET", f"/users/{OPEN_ID}/requests", 404),
        ("GET", f"/users/{OPEN_ID}/requests", 401),
        ("DELETE", f"/users/{OPEN_ID}", 200),
        ("DELETE", f"/users/{OPEN_ID}", 404),
        ("POST", "/webhooks/tiktok", 404),
        ("POST", "/webhooks/tiktok", 403),
        ("POST", "/downloads", 418),
    ],
)
def test_an_undocumented_status_for_a_route_is_refused(
    contract: Contract, method: str, path: str, status: int
) -> None:
    body = errors.InvalidRequestError("m").to_body()
    (problem,) = contract.check(method, path, status, NO_STORE, body)
    assert "undocumented status" in problem


def test_undocumented_paths_and_methods_are_refused(contract: Contract) -> None:
    body = _completed()
    assert contract.check("GET", f"/v1/downloads/{REQUEST_ID}", 200, NO_STORE, body) == [
        f"GET /v1/downloads/{REQUEST_ID}: undocumented path"
    ]
    assert contract.check("GET", "/downloads/", 200, NO_STORE, body) == ["GET /downloads/: undocumented path"]
    assert contract.check("PUT", f"/downloads/{REQUEST_ID}", 200, NO_STORE, body) == [
        f"PUT /downloads/{REQUEST_ID}: undocumented method for /downloads/{{request_id}}"
    ]
    assert contract.check("GET", "/downloads", 200, NO_STORE, body) == [
        "GET /downloads: undocumented method for /downloads"
    ]


def test_the_path_is_matched_without_its_query_and_in_any_method_case(contract: Contract) -> None:
    assert contract.check("get", f"/downloads/{REQUEST_ID}?verbose=1", 200, NO_STORE, _completed()) == []


def test_cache_control_must_be_no_store(contract: Contract) -> None:
    body = _completed()
    assert _problems(contract, body, headers={"Content-Type": "application/json"}) == [
        "GET /downloads/{request_id} 200: missing required header Cache-Control"
    ]
    (problem,) = _problems(contract, body, headers={"cache-control": "max-age=60"})
    assert "header Cache-Control" in problem


GATEWAY_REFUSALS = [
    b'{"message":"Missing Authentication Token"}',
    b'{"message":"The security token included in the request is invalid."}',
    b'{"message":"The request signature we calculated does not match the signature you provided. Check your'
    b" AWS Secret Access Key and signing method. Consult the service documentation for details.\\n\\nThe"
    b" Canonical String for this request should have been\\n'GET\\n/v1/downloads/7234567890123456789'\"}",
    b'{"message":"Signature expired: 20261127T175000Z is now earlier than 20261127T175500Z'
    b' (20261127T180000Z - 5 min.)"}',
    b'{"Message":"User: arn:aws:sts::123456789012:assumed-role/another-backend/other-91c2 is not authorized'
    b" to perform: execute-api:Invoke on resource: arn:aws:execute-api:eu-west-1:123456789012:abc123/v1/GET"
    b'/downloads/7234567890123456789 with an explicit deny"}',
]


@pytest.mark.parametrize("body", GATEWAY_REFUSALS)
@pytest.mark.parametrize(("method", "path"), SIGNED_ROUTES)
def test_api_gateways_own_sigv4_and_iam_refusals_are_documented(
    contract: Contract, method: str, path: str, body: bytes
) -> None:
    assert contract.check(method, path, 403, GATEWAY, body) == []


@pytest.mark.parametrize(("method", "path"), [*SIGNED_ROUTES, ("POST", "/webhooks/tiktok")])
def test_api_gateways_own_throttling_is_documented_on_every_route(
    contract: Contract, method: str, path: str
) -> None:
    assert contract.check(method, path, 429, GATEWAY, b'{"message":"Too Many Requests"}') == []


def test_a_gateway_message_is_one_message(contract: Contract) -> None:
    assert contract.check_schema("GatewayMessage", {"message": "m", "Message": "m"})
    assert contract.check_schema("GatewayMessage", {})
    assert contract.check_schema("GatewayMessage", {"msg": "m"})
    # Only the routes that call TikTok pass its 429 on; the others are throttled by API Gateway alone.
    body = TikTokApiError("rate_limit_exceeded", "m", log_id=None, upstream_status=429).to_body()
    for method, path in READ_ROUTES:
        assert contract.check(method, path, 429, NO_STORE, body), (method, path)


def test_a_body_that_is_not_json_or_of_another_type_is_refused(contract: Contract) -> None:
    assert "the body is not JSON" in _problems(contract, b"<html>oops</html>")[0]
    (problem,) = _problems(contract, _completed(), headers={**NO_STORE, "Content-Type": "text/html"})
    assert "Content-Type 'text/html' is not documented" in problem
    assert _problems(contract, b"") == [
        "GET /downloads/{request_id} 200: no body, where the document describes application/json"
    ]


def test_a_webhook_answer_with_another_status_word_is_refused(contract: Contract) -> None:
    assert contract.check("POST", "/webhooks/tiktok", 200, NO_STORE, {"status": "accepted"})


def test_a_document_of_another_version_is_not_taken(tmp_path: Path) -> None:
    document = tmp_path / "swagger.yaml"
    document.write_text("swagger: '2.0'\ninfo: {title: x, version: '1'}\npaths: {}\n")
    with pytest.raises(ValueError, match=r"only OpenAPI 3\.0 and 3\.1"):
        Contract.load(document)
