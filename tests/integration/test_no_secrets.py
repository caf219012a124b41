"""No secret reaches a log line, a metric, a trace, an error, an event or anything written.

The secrets: the user's access and refresh tokens (in the JSON body; the service's own, rotated ones),
the caller's SigV4 signature and session token (the ``Authorization`` and ``X-Amz-Security-Token``
headers of every signed event, conftest's ``SIGV4_SECRETS``), and a presigned URL's signature.

Every test of the suite runs under the ``logs`` guard in conftest, which fails it when its captured
output holds one of them or the scrubber's marker. The tests here drive the paths that carry the most
secrets — success (a URL is made), TikTok's refusals, broken streams, SQS, every route, and the ways a
handler fails (a bug, a malformed body, a refused token) — at DEBUG level, with X-Ray recording what the
service's tracer would send, and look at everything: the service's log lines, every library's log
records (tracebacks included), the printed metrics, the trace documents, the answers, the events, the
queues' messages and the tables' items.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from aws_lambda_powertools import Tracer
from aws_xray_sdk import global_sdk_config
from aws_xray_sdk.core import xray_recorder

from tests.conftest import BACKEND, SECRETS, SIGV4_SECRETS, LogCapture, find_secrets
from tests.harness.events import (
    api_event,
    delete_event,
    erase_event,
    get_event,
    request_event,
    user_requests_event,
)
from tests.harness.local_stack import Emulator, Resources
from tests.harness.tokens import new_request_id
from tests.harness.tokens import open_id as new_open_id
from tests.integration.support import MIB, ApiAnswer, Configure, call_api, call_worker, sqs_record
from tiktok_archive.adapters.download_records import DownloadRecords
from tiktok_archive.observability import SERVICE, WIRE_LOGGERS, logger, tracer


# -- what X-Ray would receive ------------------------------------------------------------------------
class Traces:
    """An X-Ray emitter that keeps every document the SDK would send to the daemon (as JSON)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send_entity(self, entity: Any) -> None:
        self.sent.append(entity.serialize())

    def set_daemon_address(self, address: str | None) -> None:
        """The daemon's address does not matter here."""

    @contextlib.contextmanager
    def invocation(self, function: str) -> Iterator[None]:
        """The Lambda segment of one invocation (the function's subsegments hang from it)."""
        xray_recorder.begin_segment(function)
        try:
            yield
        finally:
            xray_recorder.end_segment()

    def text(self) -> str:
        return "\n".join(self.sent)


@pytest.fixture
def traces() -> Iterator[Traces]:
    """X-Ray on, and the service's Tracer too (outside Lambda it is off and imports no X-Ray), every
    document kept instead of sent. botocore is left unpatched, as before: patching is process-wide."""
    saved = (
        global_sdk_config.sdk_enabled(),
        xray_recorder.emitter,
        xray_recorder.sampling,
        xray_recorder.context.context_missing,
    )
    capture = Traces()
    global_sdk_config.set_sdk_enabled(True)
    # Part uploads run on threads without a segment, as in Lambda: AWS_XRAY_CONTEXT_MISSING=IGNORE_ERROR.
    xray_recorder.configure(emitter=capture, sampling=False, context_missing="IGNORE_ERROR")
    tracer.use(Tracer(service=SERVICE, disabled=False, auto_patch=False))
    try:
        yield capture
    finally:
        tracer.use(None)
        xray_recorder.clear_trace_entities()
        xray_recorder.emitter, xray_recorder.sampling = saved[1], saved[2]
        xray_recorder.context.context_missing = saved[3]
        global_sdk_config.set_sdk_enabled(saved[0])


def output(logs: LogCapture, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """Everything printed: the service's log lines, every library's records with their tracebacks, and
    stdout/stderr (where the metrics go, as EMF)."""
    out, err = capsys.readouterr()
    records = [r.getMessage() for r in caplog.records]
    tracebacks = [logging.Formatter().formatException(r.exc_info) for r in caplog.records if r.exc_info]
    return "\n".join([*logs.lines, *records, *tracebacks, out, err])


def written(resources: Resources) -> str:
    """Everything the functions wrote: table items, queued messages, events."""
    dynamodb = resources.client("dynamodb")
    items = [
        dynamodb.scan(TableName=resources.local.ref(table))["Items"]
        for table in ("DownloadsTable", "GrantsTable")
    ]
    messages = [resources.queued_messages(queue) for queue in ("DownloadQueue", "LifecycleQueue")]
    return json.dumps([items, messages, resources.events()])


def answered(answers: list[ApiAnswer]) -> str:
    """The answers as their callers got them, links left out (their signatures are checked apart)."""
    bodies = [{k: v for k, v in a.body.items() if k != "url"} for a in answers]
    return json.dumps([bodies, [a.headers for a in answers]])


def signed(event: dict[str, Any]) -> dict[str, Any]:
    """``event``, checked to carry the caller's signature and session token, as every signed call does."""
    headers = json.dumps(event["headers"])
    assert all(secret in headers for secret in SIGV4_SECRETS)
    return event


def new_user(emulator: Emulator) -> dict[str, Any]:
    user = emulator.add_user(new_open_id())
    SECRETS.tokens.update({user["access_token"], user["refresh_token"]})
    return user


def rotated(emulator: Emulator, user: dict[str, Any]) -> None:
    """The user's tokens TikTok handed the service (a refresh rotates them) are secrets too."""
    now = emulator.user(user["open_id"])
    SECRETS.tokens.update({now["access_token"], now["refresh_token"]})


# -- the paths that carry the most secrets ---------------------------------------------------------
def test_no_secret_in_any_log_line_at_debug_level(
    configure: Configure,
    emulator: Emulator,
    resources: Resources,
    token: str,
    traces: Traces,
    logs: LogCapture,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the service logging at DEBUG and every other library's records captured at INFO
    logger.setLevel(logging.DEBUG)
    caplog.set_level(logging.INFO)
    ok, broken, refused = new_request_id(), new_request_id(), new_request_id()
    emulator.register(ok, token, size=11 * MIB)
    emulator.register(broken, token, size=11 * MIB, fault={"kind": "reset", "after_bytes": 6 * MIB})
    emulator.register(refused, token, fault={"kind": "error", "status": 401, "code": "access_token_invalid"})
    try:
        # When downloads succeed and fail through both triggers
        answers = []
        for request_id in (ok, broken, refused):
            with traces.invocation("ApiFunction"):
                answers.append(call_api(signed(api_event(request_id, token))))
        with traces.invocation("WorkerFunction"):
            call_worker(
                [
                    sqs_record(json.dumps({"request_id": i, "access_token": token}))
                    for i in (ok, broken, refused)
                ]
            )
    finally:
        logger.setLevel(logging.INFO)

    # Then there was plenty to look at — including a URL in an answer — and none of it holds a secret
    assert [a.status for a in answers] == [200, 502, 401]
    assert "X-Amz-Signature=" in answers[0].body["url"]
    everything = output(logs, caplog, capsys)
    assert len(logs.lines) >= 8
    assert '"level":"DEBUG"' in everything
    assert '"_aws"' in everything  # the metrics, printed as EMF
    assert "## lambda_handler" in traces.text()
    assert find_secrets(everything) == []
    assert find_secrets(traces.text()) == []
    assert find_secrets(answered(answers)) == []
    assert find_secrets(written(resources)) == []
    assert token not in everything
    assert answers[0].body["url"] not in everything + traces.text()


def test_async_and_queue_paths_at_debug_everywhere_leak_no_token_in_any_spelling(
    configure: Configure,
    emulator: Emulator,
    resources: Resources,
    token: str,
    traces: Traces,
    logs: LogCapture,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the service at DEBUG and the root logger capturing every library's DEBUG records
    configure(parameters={"LogLevel": "DEBUG"})
    logger.setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    queued, sent, broken = new_request_id(), new_request_id(), new_request_id()
    emulator.register(queued, token, size=6 * MIB)
    emulator.register(sent, token, size=6 * MIB)
    emulator.register(broken, token, fault={"kind": "error", "status": 429, "code": "rate_limit_exceeded"})
    try:
        # When a job is queued by the API (KMS-sealed token), the worker runs it, a backend's message
        # with a clear token runs too, and one is rate-limited
        with traces.invocation("ApiFunction"):
            accepted = call_api(api_event(queued, token, prefer="respond-async"))
        [job] = resources.queued_messages()
        with traces.invocation("WorkerFunction"):
            batch = call_worker(
                [
                    sqs_record(job["Body"]),
                    sqs_record(json.dumps({"request_id": str(sent), "access_token": token})),
                    sqs_record(json.dumps({"request_id": str(broken), "access_token": token})),
                ]
            )
        with traces.invocation("ApiFunction"):
            done = call_api(get_event(queued))
    finally:
        logger.setLevel(logging.INFO)

    # Then there was DEBUG output of every kind to look at, and a link was handed out
    assert accepted.status == 202
    assert len(batch["batchItemFailures"]) == 1
    assert "X-Amz-Signature=" in done.body["url"]
    everything = output(logs, caplog, capsys)
    assert '"level":"DEBUG"' in everything
    assert any(r.levelno == logging.DEBUG and not r.name.startswith("tiktok") for r in caplog.records)
    # And the wire loggers, which print request bodies (the KMS Encrypt body holds the token in
    # base64), stayed at WARNING
    assert not [r for r in caplog.records if r.name.startswith(WIRE_LOGGERS) and r.levelno < logging.WARNING]
    # And no token shows in any spelling, nor the link, nor its signature — in the output or the traces
    for text in (everything, traces.text()):
        assert find_secrets(text) == []
        assert base64.b64encode(token.encode()).decode()[:40] not in text
        assert quote(token, safe="") not in text
        assert done.body["url"] not in text
    assert find_secrets(written(resources)) == []


# -- every route: the caller's signature and the user's tokens --------------------------------------
def test_the_callers_signature_and_the_users_tokens_reach_nothing_on_any_route(
    configure: Configure,
    emulator: Emulator,
    resources: Resources,
    traces: Traces,
    logs: LogCapture,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the service at DEBUG, and two users who consented, whose tokens the backend hands over
    configure(parameters={"LogLevel": "DEBUG"})
    logger.setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    adding, downloading = new_user(emulator), new_user(emulator)
    ready = new_request_id()
    emulator.register(ready, downloading["access_token"], size=64 * 1024)
    events = [
        request_event(
            {}, adding["access_token"], refresh_token=adding["refresh_token"], open_id=adding["open_id"]
        ),
        api_event(
            ready,
            downloading["access_token"],
            refresh_token=downloading["refresh_token"],
            open_id=downloading["open_id"],
        ),
        api_event(ready, downloading["access_token"], prefer="respond-async"),
        get_event(ready),
        user_requests_event(downloading["open_id"]),
        delete_event(ready),
        erase_event(adding["open_id"]),
    ]
    try:
        # When the backend calls every route, each call signed with its session's credentials
        answers = []
        for event in events:
            with traces.invocation("ApiFunction"):
                answers.append(call_api(signed(event)))
    finally:
        logger.setLevel(logging.INFO)
    rotated(emulator, adding)
    rotated(emulator, downloading)

    # Then every route answered as it should
    assert [a.status for a in answers] == [202, 200, 200, 200, 200, 200, 202], [a.body for a in answers]
    assert "X-Amz-Signature=" in answers[3].body["url"]
    # And neither the caller's signature and session token nor any of the users' tokens (handed over,
    # or rotated by the service) shows anywhere
    everything = output(logs, caplog, capsys)
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    assert find_secrets(everything) == []
    assert find_secrets(traces.text()) == []
    assert find_secrets(answered(answers)) == []
    assert find_secrets(written(resources)) == []
    for secret in SIGV4_SECRETS:
        assert secret not in everything + traces.text() + answered(answers) + written(resources)


# -- when the handler fails -------------------------------------------------------------------------
def _bug(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug deep in the download, with every token of the call alive in the frames above it."""

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("a bug in the records adapter")

    monkeypatch.setattr(DownloadRecords, "claim", broken)


def _body(make: Callable[[str, str, int], str]) -> Callable[[str, str, int], dict[str, Any]]:
    return lambda token, refresh, request_id: api_event(body=make(token, refresh, request_id))


FAILURES: dict[str, tuple[Callable[[str, str, int], dict[str, Any]], int, str]] = {
    # (the call, given the user's access token, a refresh token and the request_id; status; code)
    "a bug": (
        lambda token, refresh, request_id: api_event(request_id, token, refresh_token=refresh),
        500,
        "unexpected_error",
    ),
    "not JSON": (
        _body(lambda t, r, i: f"request_id={i}&access_token={quote(t)}&refresh_token={quote(r)}"),
        400,
        "invalid_request",
    ),
    "broken JSON": (
        _body(lambda t, r, i: f'{{"request_id": {i}, "access_token": "{t}", "refresh_token": "{r}",'),
        400,
        "invalid_request",
    ),
    "tokens in other fields": (
        _body(lambda t, r, i: json.dumps({"request_id": t, "access_token": r, "open_id": r})),
        400,
        "invalid_request",
    ),
    "an unknown field holding a token": (
        _body(lambda t, r, i: json.dumps({"request_id": i, "access_token": t, "token": r})),
        400,
        "invalid_request",
    ),
    "a token as a field's name": (
        _body(lambda t, r, i: json.dumps({"request_id": i, "access_token": t, r: True})),
        400,
        "invalid_request",
    ),
    "a malformed access token": (
        _body(
            lambda t, r, i: json.dumps({"request_id": i, "access_token": f"Bearer {t}", "refresh_token": r})
        ),
        400,
        "missing_token",
    ),
    "a malformed refresh token": (
        _body(lambda t, r, i: json.dumps({"request_id": i, "access_token": t, "refresh_token": f"{r} {t}"})),
        400,
        "invalid_request",
    ),
    "no identity": (
        lambda token, refresh, request_id: api_event(request_id, token, refresh_token=refresh, caller=None),
        403,
        "caller_not_identified",
    ),
}
# The calls API Gateway would answer itself, sent to the function anyway (a route without AWS_IAM).
PAST_THE_GATEWAY = {"no identity"}


@pytest.mark.parametrize("failure", FAILURES)
def test_nothing_leaks_when_the_api_fails(
    configure: Configure,
    emulator: Emulator,
    resources: Resources,
    token: str,
    traces: Traces,
    logs: LogCapture,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    # Given the service at DEBUG, a user's request ready at TikTok, and a call that fails
    configure(parameters={"LogLevel": "DEBUG"})
    logger.setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    user = new_user(emulator)
    request_id = new_request_id()
    emulator.register(request_id, user["access_token"])
    make, status, code = FAILURES[failure]
    if failure == "a bug":
        _bug(monkeypatch)
    event = signed(make(user["access_token"], user["refresh_token"], request_id))
    try:
        with traces.invocation("ApiFunction"):
            answer = call_api(event, gateway=failure not in PAST_THE_GATEWAY)
    finally:
        logger.setLevel(logging.INFO)
    rotated(emulator, user)

    # Then the caller is told what failed, and nothing anywhere holds a token or the signature
    assert (answer.status, answer.body["error"]["code"]) == (status, code), answer.body
    everything = output(logs, caplog, capsys)
    if failure == "a bug":
        [bug] = logs.find("unexpected error")
        assert "RuntimeError" in bug["exception"]  # logged with its traceback, answered with nothing of it
        assert answer.body["error"]["message"] == "internal error"
    assert "## lambda_handler" in traces.text()
    assert find_secrets(everything) == []
    assert find_secrets(traces.text()) == []
    assert find_secrets(answered([answer])) == []
    assert find_secrets(written(resources)) == []


@pytest.mark.parametrize("refused", ["access token", "refresh token", "open_id"])
def test_nothing_leaks_when_tiktok_refuses_the_tokens(
    configure: Configure,
    emulator: Emulator,
    resources: Resources,
    traces: Traces,
    logs: LogCapture,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    refused: str,
) -> None:
    # Given the service at DEBUG, a user's ready request, and tokens TikTok refuses: an access token it
    # does not know, a refresh token it does not know, or the tokens of a user the caller misnames
    configure(parameters={"LogLevel": "DEBUG"})
    logger.setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    user, someone = new_user(emulator), new_user(emulator)
    request_id = new_request_id()
    emulator.register(request_id, user["access_token"])
    access, refresh, open_id = user["access_token"], None, None
    if refused == "access token":
        access = SECRETS.token()
    elif refused == "refresh token":
        refresh = SECRETS.refresh_token()
    else:
        refresh, open_id = user["refresh_token"], someone["open_id"]
    try:
        with traces.invocation("ApiFunction"):
            answer = call_api(signed(api_event(request_id, access, refresh_token=refresh, open_id=open_id)))
    finally:
        logger.setLevel(logging.INFO)
    rotated(emulator, user)

    # Then the caller learns TikTok's verdict, and nothing anywhere holds a token or the signature
    expected = {
        "access token": (401, "access_token_invalid"),
        "refresh token": (401, "reauthorization_required"),
        "open_id": (400, "open_id_mismatch"),
    }[refused]
    assert (answer.status, answer.body["error"]["code"]) == expected, answer.body
    if refused != "open_id":
        assert '"exceptions"' in traces.text()  # TikTok's refusal, recorded on the call's subsegment
    everything = output(logs, caplog, capsys)
    assert find_secrets(everything) == []
    assert find_secrets(traces.text()) == []
    assert find_secrets(answered([answer])) == []
    assert find_secrets(written(resources)) == []


@pytest.mark.parametrize("failure", ["a bug", "a malformed token", "not JSON", "a refused token"])
def test_nothing_leaks_when_the_worker_fails(
    configure: Configure,
    emulator: Emulator,
    resources: Resources,
    token: str,
    traces: Traces,
    logs: LogCapture,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    configure(parameters={"LogLevel": "DEBUG"})
    logger.setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    request_id = new_request_id()
    emulator.register(request_id, token)
    body = json.dumps({"request_id": str(request_id), "access_token": token})
    if failure == "a bug":
        _bug(monkeypatch)
    elif failure == "a malformed token":
        body = json.dumps({"request_id": str(request_id), "access_token": f"{token} {token}"})
    elif failure == "not JSON":
        body = f"request_id={request_id}&access_token={token}"
    else:
        body = json.dumps({"request_id": str(request_id), "access_token": SECRETS.token()})
    record = sqs_record(body)
    try:
        with traces.invocation("WorkerFunction"):
            result = call_worker([record])
    finally:
        logger.setLevel(logging.INFO)

    # Then a bug comes back for another delivery, the rest is acknowledged; nothing holds a token
    failed = [{"itemIdentifier": record["messageId"]}] if failure == "a bug" else []
    assert result == {"batchItemFailures": failed}
    everything = output(logs, caplog, capsys)
    assert "## lambda_handler" in traces.text()
    assert find_secrets(everything) == []
    assert find_secrets(traces.text()) == []
    assert find_secrets(written(resources)) == []


def test_the_guard_sees_the_callers_signature_and_session_token(token: str) -> None:
    # The guard of every test knows the SigV4 secrets of the signed sample events, in their own right
    event = api_event(new_request_id(), token, caller=BACKEND)
    authorization, session = event["headers"]["Authorization"], event["headers"]["X-Amz-Security-Token"]
    assert len(find_secrets(f"{authorization} {session}")) == 2
    assert find_secrets(event["body"]) == find_secrets(token) != []
