"""A local emulator of TikTok's Data Portability API and its OAuth endpoints, including their failures.

Run it with ``python -m tests.harness.tiktok_emulator [--port N]``; it prints ``listening on
http://127.0.0.1:N`` once ready. What it serves is set over HTTP, so tests and the demo drive it the
same way whether it runs in a thread or in its own process (``tests.harness.emulator_control.Emulator``
has one method per control endpoint). It is one stdlib process: ``http.server`` with a thread per
connection, and one background thread that delivers webhooks.

The TikTok-facing behaviour follows ``shared/reference/tiktok-portability-api.md`` and the original
download page, never the project's client code. Where the reference leaves a choice, the choice is
written below and marked *Choice*.

Emulated clock
==============

Everything time-dependent (token expiry, request preparation and expiry, the rate-limit window, webhook
``create_time``, log ids) uses ``now = real time + offset``; tests move time, they never sleep for it.

- ``POST /_emulator/clock`` ``{"advance": seconds}`` moves it forward (never back) and answers
  ``{"now"}``; ``GET /_emulator/clock`` answers ``{"now": <Unix seconds, float>}``.

What is *not* emulated time: the ``calls[].at`` and ``last_body_sent_at`` of a request (real time, as
before), the pacing of ``bytes_per_second`` and ``stall`` faults (real seconds), and the ``t=`` of a
webhook signature (real time: the receiver checks it against its own clock, which the offset does not
move).

Control endpoints
=================

Answers are JSON; a malformed control call answers 400 ``{"error": "…"}``, an unknown id 404.

- ``GET /_emulator/health`` → ``{"ok": true}``.
- ``POST /_emulator/reset`` forgets everything: requests, users, tokens, the clock offset (back to 0),
  the app credentials (back to the defaults), the webhook URL and its deliveries, call counts and rate
  limits. Webhook deliveries still in flight are no longer recorded.
- ``PUT /_emulator/app`` ``{"client_key", "client_secret"}`` (either may be left out) sets the app's
  credentials, used by the OAuth endpoints and as the webhook signing key; defaults ``awtestclientkey0001``
  and ``test-client-secret-0001``. ``GET /_emulator/app`` answers them.
- ``PUT /_emulator/requests/{request_id}`` with ``{"token", "size", "archive", "transfer":
  "chunked"|"length", "chunk_size", "bytes_per_second", "scopes", "ranges": "ignore"|"honour", "fault",
  "fault_times", "check_fault", "status"}`` registers an archive owned by the access token ``token`` and
  answers ``{"size_bytes", "sha256", "entries", "entry_count", "owner"}`` (``entries`` holds at most the
  first 1,000 names; ``entry_count`` all of them; ``owner`` is the owning ``open_id``). ``archive`` is an
  archive spec (``tests.harness.archives``: ``{"kind": "default", "size": N}``, ``{"kind": "many_entries",
  "count": N}``, ``{"kind": "hostile_names"}``, ``{"kind": "big_central_directory", "count": N}``);
  without it the archive is the default one of ``size`` bytes (64 KiB). The request is ``downloading``
  with ``apply_time`` = ``collect_time`` = now, and turns ``expired`` four days later like any other; a
  ``status`` of ``pending`` keeps it pending until ``PUT …/state``, ``expired`` and ``cancelled`` set that
  state. Its ``data_format`` is ``json`` and its ``category_selection_list`` ``["all_data"]``. A
  registered request keeps the ``scopes`` of its registration (default ``["portability.all.single"]``):
  they, not its owner's, decide ``scope_not_authorized``. ``check_fault`` ``{"status", "code", "message",
  "retry_after", "times"}`` makes Check Status answer the owner that TikTok error (``times`` calls, or
  all). Registering an id again replaces the request. A ``token`` the emulator does not know creates an
  implicit user owning it: a generated ``open_id``, the registration's scopes, no refresh token, the
  access token expiring 2 h after creation (emulated clock).
- ``GET /_emulator/requests/{request_id}`` answers ``{"request_id" (decimal string), "owner", "status"
  (now), "apply_time", "ready_at", "downloads", "checks", "cancels", "calls": [{"at", "range",
  "fault"}], "last_body_sent_at"}``: ``downloads``, ``checks`` and ``cancels`` count the calls of the
  download, Check Status and Cancel endpoints that named the request with a valid token (whoever owns
  it; faults included).
- ``PUT /_emulator/requests/{request_id}/state`` ``{"status"}`` forces a state and answers as ``GET``.
  *Choice*: the state is set by moving the request's times, so the clock carries on from it: ``pending``
  makes it ready its owner's ``prepare_seconds`` from now; ``downloading`` makes it ready now (and
  ``expired`` four days later); ``expired`` makes it four days and a second past ready; ``cancelled``
  cancels it (any other state clears a cancellation).
- ``PUT /_emulator/users/{open_id}`` with optional ``{"scopes"`` (default
  ``["portability.all.ongoing"]``), ``"access_token"``, ``"refresh_token"`` (generated, TikTok-shaped,
  when absent), ``"access_expires_in"`` (7200), ``"refresh_expires_in"`` (15552000 = 180 days),
  ``"prepare_seconds"`` (how long a request added later stays pending, 60), ``"archive_size"`` (bytes of
  the archive of requests added later, 64 KiB), ``"archive"`` (an archive spec, replacing
  ``archive_size``), ``"oauth_fault"`` (``{"status": 500, "times": 1, "rotate": false}``)``}`` creates a
  user and answers ``{"open_id", "access_token", "refresh_token", "access_expires_at",
  "refresh_expires_at"}``. On an existing user it updates only what is given; it issues new tokens only
  when ``access_token`` / ``refresh_token`` are given, or when the user was revoked (re-consent: the
  user is no longer revoked and gets fresh tokens). A token already held by another user answers 409.
- ``GET /_emulator/users/{open_id}`` answers ``{"open_id", "access_token", "refresh_token"`` (current),
  ``"access_expires_at", "refresh_expires_at", "scopes", "refreshes"`` (successful refreshes),
  ``"refused_refreshes"`` (``invalid_grant`` answers for one of the user's refresh tokens),
  ``"revoked", "adds"`` (accepted Add Data Request calls), ``"requests"`` (ids as decimal strings)``}``.
- ``POST /_emulator/users/{open_id}/revoke`` ``{"reason": 0-5}`` (default 1): the user disconnects the
  app on TikTok's side: exactly what ``POST /v2/oauth/revoke/`` does, with that ``reason``.
- ``PUT /_emulator/webhooks`` ``{"url": <URL or null>, "repeat": N}`` sets where webhooks go (none by
  default); each event is sent ``repeat`` times (default 1) to exercise at-least-once delivery.
  ``GET /_emulator/webhooks`` answers ``{"url", "deliveries": [{"event", "status" (HTTP status, or null
  when the connection failed), "at" (emulated time), "attempt", "user_openid", "request_id" (decimal
  string, ready events only)}]}``, one entry per attempt.
- ``PUT /_emulator/limits`` ``{"per_minute": N, "endpoint": name}`` sets the rate limit of one endpoint,
  or of all when ``endpoint`` is left out (default 1000 calls a minute each).
- ``GET /_emulator/stats`` answers ``{"calls": {"add", "check", "cancel", "download", "oauth",
  "revoke"}, "rate_limited": {…the same keys…}, "per_minute": {…}}``; ``calls`` counts every call that
  reached the endpoint, rate-limited ones included.

The portability endpoints
=========================

Every call is ``POST`` with ``Authorization: Bearer <access token>`` and ``Content-Type:
application/json``. Each is checked in this order: the rate limit (429 ``rate_limit_exceeded`` with
``Retry-After``), the token (a missing, unknown, revoked or expired token, on the emulated clock, is
401 ``access_token_invalid``; a refreshed user's previous access token stays valid until its own
expiry), the Content-Type and body (400 ``invalid_params``), then the request: a known ``request_id``
of another user and an unknown ``request_id`` are both 400 ``invalid_params`` (nobody learns whether
someone else's request exists), then the scopes (401 ``scope_not_authorized`` without any
``portability.*`` scope). Errors have the shape of the download page's failure example,
``{"data": {}, "error": {"code", "http_status_code", "log_id", "message"}}``, with the same ``log_id`` in
the ``X-Tt-Logid`` header: 34 characters, a 14-digit UTC timestamp and 20 upper-case hex digits.
Successes carry ``"error": {"code": "ok", "message": "", "log_id"}``.

- ``POST /v2/user/data/add/?fields=request_id`` with ``{"data_format": "json"|"text",
  "category_selection_list": [...]}`` (both required; categories among ``all_data``, ``video``,
  ``profile``, ``activity``, ``direct_message``, at least one; a ``fields`` other than ``request_id`` is
  ``invalid_params``) creates a ``pending`` request owned by the token's user: ``apply_time`` = now,
  ready at now + the user's ``prepare_seconds``, and answers ``{"data": {"request_id": <int64, random,
  above 2^60>}, "error": {…"ok"…}}``. Scopes: a user without any portability scope gets 401
  ``scope_not_authorized``; *Choice* (from TikTok's "scopes required for categories" table): each
  category needs its family's scope (``activity`` → ``portability.activity.*``, ``video``/``profile`` →
  ``portability.postsandprofile.*``, ``direct_message`` → ``portability.directmessages.*``, ``all_data``
  → ``portability.all.*``; ``portability.all.*`` covers every category), else 400
  ``scope_permission_missed``. A user whose portability scopes are all ``.single`` may add one request:
  the second add is 400 ``scope_permission_missed``. *Choice*: only Add calls count towards that one
  request, not requests registered with ``PUT /_emulator/requests``.
- ``POST /v2/user/data/check/?fields=…`` with ``{"request_id"}`` answers, in ``data``, exactly the
  fields named in ``fields`` among ``request_id`` (a JSON integer), ``apply_time``, ``collect_time``,
  ``status``, ``data_format``, ``category_selection_list``; an unknown field name is ``invalid_params``;
  *Choice*: without ``fields`` (or with an empty one) it answers ``request_id`` and ``status``, as this
  emulator always did. ``status`` comes from the clock: ``pending`` before the request is ready,
  ``downloading`` from then for four days, then ``expired``; ``cancelled`` once cancelled.
  ``apply_time`` and ``collect_time`` are Unix seconds (integers); ``collect_time`` is the time the
  archive became ready, 0 while pending (and for a request cancelled before it was ready).
- ``POST /v2/user/data/cancel/`` takes ``request_id`` from the JSON body or, as the docs' parameter
  table also says, from a ``request_id`` query parameter (decimal). With the query parameter the body
  may be empty (then no Content-Type is required); when both are given they must agree. A ``pending``
  or ``downloading`` request becomes ``cancelled`` and the answer is the error object alone, ``{"error":
  {"code": "ok", "message": "", "log_id"}}``. *Choice*: cancelling an ``expired`` or already
  ``cancelled`` request is 400 ``invalid_params`` ("The request is already expired/cancelled.") and
  changes nothing: the reference documents ``ok`` only for a cancellation that happens, and its one
  failure example, ``invalid_params``, for a ``request_id`` that cannot be acted on.
- ``POST /v2/user/data/download/`` with ``{"request_id"}`` answers the zip only while the request is
  ``downloading``; ``pending``, ``expired`` and ``cancelled`` requests are 400 ``invalid_params`` with the
  download page's message. The body is the archive, chunked or with Content-Length. TikTok documents no
  Range support, so by default a ``Range`` header is ignored (200 and the whole archive); with
  ``"ranges": "honour"`` a ``Range: bytes=N-`` is answered 206 with ``Content-Range: bytes
  N-last/size`` and the rest of the archive. A registered ``fault`` replaces the answer for the first
  ``fault_times`` calls that reach the request (all of them when omitted):

  - ``{"kind": "error", "status": 429, "code": "rate_limit_exceeded", "retry_after": "7"}``: a JSON error
    with any status, 200 included.
  - ``{"kind": "html", "status": 502}``: an HTML error page.
  - ``{"kind": "not_zip"}`` / ``{"kind": "empty"}``: 200 with bytes that are not an archive, or none.
  - ``{"kind": "reset", "after_bytes": N}``: the archive up to byte N, then a TCP reset.
  - ``{"kind": "truncate", "after_bytes": N}``: the archive up to byte N, then a clean close before
    the end.
  - ``{"kind": "stall", "after_bytes": N, "seconds": S}``: the archive up to byte N, then silence for S
    seconds. (A ranged answer starting beyond byte N fails at once.)
  - ``{"kind": "drop"}``: the request is read, then the connection reset before any answer.
  - ``{"kind": "no_central_directory"}``: a complete, well-framed 200 body holding the archive without
    its central directory and end record — a zip that was cut, served as if whole.

OAuth
=====

Both endpoints take a form (``application/x-www-form-urlencoded``); anything else, a JSON body
included, is ``invalid_request``. Their errors have OAuth's own shape, ``{"error", "error_description",
"log_id"}`` with no ``data`` (the rate limit too: ``{"error": "rate_limit_exceeded", …}``, 429).

- ``POST /v2/oauth/token/`` ``client_key, client_secret, grant_type=refresh_token, refresh_token``:
  a missing field or another ``grant_type`` is 400 ``invalid_request``; wrong app credentials 401
  ``invalid_client``; an unknown, already rotated (replayed), expired or revoked refresh token 400
  ``invalid_grant``. Success is 200 ``{"access_token", "expires_in", "open_id", "refresh_expires_in",
  "refresh_token", "scope" (comma-separated), "token_type": "Bearer"}`` with new tokens: refresh tokens
  rotate, so the one just used stops working at once; *Choice*: the new refresh token gets the user's
  full ``refresh_expires_in`` from now. The previous access token stays valid until its own expiry.
  With a user's ``oauth_fault`` ``{"status": S, "times": N}``, the next N calls naming one of that
  user's refresh tokens answer S with an HTML page; with ``"rotate": true`` the emulator rotates the
  tokens first (counted as a refresh), so the client never sees the new refresh token and its old one
  is dead — the lost-answer case.
- ``POST /v2/oauth/revoke/`` ``client_key, client_secret, token`` (the user's access token; any access or
  refresh token the user was given is accepted) revokes every token of the user, marks it revoked and
  answers 200 ``{}`` as TikTok's page shows. *Choice*: an unknown token, or one of an already revoked
  user, is 400 ``invalid_request``. A revocation sends ``authorization.removed`` with content
  ``{"reason": 1}`` (the reason the brief names; TikTok's list has 5 for "developer revoke
  authorization": use the control revoke above for another reason).

Webhooks
========

``sign(client_secret, timestamp, body)`` and ``webhook_body(event, user_openid, content, client_key=…,
create_time=…)`` build exactly what is sent: a JSON body ``{"client_key", "event", "create_time",
"user_openid", "content"}`` whose ``content`` is a JSON document serialised as a string, and the header
``TikTok-Signature: t=<unix seconds>,s=<hex HMAC-SHA256 of "<t>." + body, keyed with the client
secret>``. A request added with the Add endpoint sends ``portability.download.ready`` (content
``{"request_id": <int64>}``) once, the first time the emulator notices it is past its ready time (any
API call, a clock advance, a state change); registered requests send none. Deliveries go to the
configured URL in order, from one background thread; an answer other than 200, or a connection
failure, is retried twice (0.2 s, then 0.4 s later). Each attempt is logged in ``GET
/_emulator/webhooks``.

Rate limits
===========

Each endpoint (``add``, ``check``, ``cancel``, ``download``, ``oauth``, ``revoke``) has a one-minute
sliding window on the emulated clock: a call is admitted while fewer than ``per_minute`` calls were
admitted in the last 60 s, else answered 429 ``rate_limit_exceeded`` with ``Retry-After`` = whole
seconds until the oldest admitted call leaves the window. Refused calls take no slot.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import hmac
import http.client
import json
import math
import queue
import re
import secrets
import socket
import struct
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.harness import tokens
from tests.harness.archives import KINDS, Archive, ArchiveSpecError, build_from_spec

ADD_PATH = "/v2/user/data/add/"
CHECK_PATH = "/v2/user/data/check/"
CANCEL_PATH = "/v2/user/data/cancel/"
DOWNLOAD_PATH = "/v2/user/data/download/"
TOKEN_PATH = "/v2/oauth/token/"
REVOKE_PATH = "/v2/oauth/revoke/"
PORTABILITY_ENDPOINTS = {
    ADD_PATH: "add",
    CHECK_PATH: "check",
    CANCEL_PATH: "cancel",
    DOWNLOAD_PATH: "download",
}
ENDPOINTS = ("add", "check", "cancel", "download", "oauth", "revoke")

DEFAULT_CLIENT_KEY = "awtestclientkey0001"
DEFAULT_CLIENT_SECRET = "test-client-secret-0001"
DEFAULT_PER_MINUTE = 1000
DEFAULT_ARCHIVE_SIZE = 64 * 1024
IMPLICIT_SCOPES = ("portability.all.single",)
USER_SCOPES = ("portability.all.ongoing",)
ACCESS_EXPIRES_IN = 7200
REFRESH_EXPIRES_IN = 15_552_000
PREPARE_SECONDS = 60.0
DOWNLOADABLE_FOR = 4 * 24 * 3600
WINDOW_SECONDS = 60.0
LISTED_ENTRIES = 1000

STATUSES = ("pending", "downloading", "expired", "cancelled")
DATA_FORMATS = ("json", "text")
CATEGORY_FAMILY = {
    "all_data": "all",
    "video": "postsandprofile",
    "profile": "postsandprofile",
    "activity": "activity",
    "direct_message": "directmessages",
}
CHECK_FIELDS = (
    "request_id",
    "apply_time",
    "collect_time",
    "status",
    "data_format",
    "category_selection_list",
)
DEFAULT_CHECK_FIELDS = ("request_id", "status")
_PORTABILITY_SCOPE = re.compile(
    r"portability\.(all|activity|directmessages|postsandprofile)\.(single|ongoing)"
)
_REQUEST = re.compile(r"/_emulator/requests/([0-9]+)(/state)?")
_USER = re.compile(r"/_emulator/users/([^/]+)(/revoke)?")
_INT64_MAX = 2**63 - 1
_RANGE = re.compile(r"bytes=([0-9]+)-")
_FORM = "application/x-www-form-urlencoded"

_TOKEN_INVALID = "The access token is invalid or not found in the request."
_BAD_REQUEST_ID = "Incorrect `request_id`. Please validate the request."
_NO_SCOPE = "The user did not authorize the scope required for completing this request."


class ControlError(Exception):
    """A control call the emulator cannot honour; answered with ``status`` and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# -- webhooks --------------------------------------------------------------------------------------
def sign(client_secret: str, timestamp: int, body: bytes) -> str:
    """The ``TikTok-Signature`` header value: ``t=<timestamp>,s=<hex HMAC-SHA256 of "<t>." + body>``."""
    digest = hmac.new(client_secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},s={digest}"


def webhook_body(
    event: str, user_openid: str, content: dict[str, Any], *, client_key: str, create_time: int
) -> bytes:
    """A webhook's JSON body; ``content`` is serialised as a JSON string (integers stay integers)."""
    document = {
        "client_key": client_key,
        "event": event,
        "create_time": create_time,
        "user_openid": user_openid,
        "content": json.dumps(content),
    }
    return json.dumps(document).encode()


@dataclass(frozen=True)
class WebhookJob:
    """One event to deliver, stamped with the state generation it belongs to."""

    generation: int
    url: str
    client_secret: str
    body: bytes
    event: str
    user_openid: str
    request_id: int | None
    repeat: int


# -- the model -------------------------------------------------------------------------------------
@dataclass
class User:
    """A TikTok user who authorised the app, with the settings of the requests they add."""

    open_id: str
    scopes: tuple[str, ...]
    access_token: str
    refresh_token: str | None
    access_expires_at: float
    refresh_expires_at: float
    access_expires_in: int = ACCESS_EXPIRES_IN
    refresh_expires_in: int = REFRESH_EXPIRES_IN
    prepare_seconds: float = PREPARE_SECONDS
    archive: dict[str, Any] | None = None
    archive_size: int = DEFAULT_ARCHIVE_SIZE
    oauth_fault: dict[str, Any] | None = None
    oauth_fault_times: int = 0
    refreshes: int = 0
    refused_refreshes: int = 0
    revoked: bool = False
    adds: int = 0
    requests: list[int] = field(default_factory=list)


@dataclass
class Grant:
    """One token handed out: whose, of which kind, until when, and whether it still works."""

    open_id: str
    kind: str  # "access" | "refresh"
    expires_at: float
    state: str = "live"  # "live" | "rotated" | "revoked"


@dataclass
class DataRequest:
    """One data request: its lifecycle on the emulated clock, its archive and how to serve it."""

    request_id: int
    owner: str
    apply_time: float
    ready_at: float
    archive_spec: dict[str, Any] | None
    data_format: str = "json"
    categories: tuple[str, ...] = ("all_data",)
    added: bool = False
    cancelled_at: float | None = None
    notified: bool = False
    transfer: str = "chunked"
    chunk_size: int = 64 * 1024
    scopes: tuple[str, ...] | None = None
    fault: dict[str, Any] | None = None
    fault_times: int | None = None
    check_fault: dict[str, Any] | None = None
    bytes_per_second: float | None = None
    ranges: str = "ignore"
    downloads: int = 0
    checks: int = 0
    cancels: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)
    last_body_sent_at: float | None = None
    built: Archive | None = None
    building: threading.Lock = field(default_factory=threading.Lock)

    def status(self, now: float) -> str:
        """``pending``, ``downloading``, ``expired`` or ``cancelled`` at ``now``."""
        if self.cancelled_at is not None:
            return "cancelled"
        if now < self.ready_at:
            return "pending"
        if now < self.ready_at + DOWNLOADABLE_FOR:
            return "downloading"
        return "expired"

    def collect_time(self, now: float) -> int:
        """When the archive became ready (Unix seconds), 0 if it has not (or was cancelled before)."""
        reached = min(now, self.cancelled_at if self.cancelled_at is not None else now)
        return int(self.ready_at) if self.ready_at <= reached else 0

    @property
    def data(self) -> bytes:
        """The archive's bytes, built on first use (outside the state lock: big ones take seconds)."""
        with self.building:
            if self.built is None:
                self.built = build_from_spec(self.request_id, self.archive_spec)
            return self.built.data


@dataclass
class State:
    """Everything the emulator knows, shared by its request threads; ``lock`` guards all of it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: dict[int, DataRequest] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    grants: dict[str, Grant] = field(default_factory=dict)
    offset: float = 0.0
    client_key: str = DEFAULT_CLIENT_KEY
    client_secret: str = DEFAULT_CLIENT_SECRET
    webhook_url: str | None = None
    webhook_repeat: int = 1
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    generation: int = 0
    per_minute: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENDPOINTS, DEFAULT_PER_MINUTE))
    windows: dict[str, collections.deque[float]] = field(
        default_factory=lambda: {name: collections.deque() for name in ENDPOINTS}
    )
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENDPOINTS, 0))
    rate_limited: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENDPOINTS, 0))
    webhook_jobs: queue.Queue[WebhookJob | None] = field(default_factory=queue.Queue)

    def now(self) -> float:
        """The emulated time: real time plus the offset the clock was advanced by."""
        return time.time() + self.offset

    def next_log_id(self) -> str:
        """A TikTok-shaped log id: 14-digit UTC timestamp (emulated clock) and 20 hex digits."""
        return time.strftime("%Y%m%d%H%M%S", time.gmtime(self.now())) + secrets.token_hex(10).upper()

    def reset(self) -> None:
        """Back to a fresh emulator (the caller holds the lock)."""
        fresh = State()
        for name in (
            "requests",
            "users",
            "grants",
            "offset",
            "client_key",
            "client_secret",
            "webhook_url",
            "webhook_repeat",
            "deliveries",
            "per_minute",
            "windows",
            "calls",
            "rate_limited",
        ):
            setattr(self, name, getattr(fresh, name))
        self.generation += 1

    # -- users and tokens (the caller holds the lock) --
    def issue_access(self, user: User, access: str | None = None) -> None:
        """Give ``user`` a new access token (generated when ``None``); earlier ones live until they expire."""
        now = self.now()
        access = access or tokens.access_token()
        self._claim(access, user.open_id)
        self.grants[access] = Grant(user.open_id, "access", now + user.access_expires_in)
        user.access_token, user.access_expires_at = access, now + user.access_expires_in

    def issue_refresh(self, user: User, refresh: str | None = None) -> None:
        """Give ``user`` a new refresh token (generated when ``None``); the previous one stops working."""
        now = self.now()
        refresh = refresh or tokens.refresh_token()
        self._claim(refresh, user.open_id)
        if user.refresh_token and user.refresh_token != refresh and user.refresh_token in self.grants:
            self.grants[user.refresh_token].state = "rotated"
        self.grants[refresh] = Grant(user.open_id, "refresh", now + user.refresh_expires_in)
        user.refresh_token, user.refresh_expires_at = refresh, now + user.refresh_expires_in

    def _claim(self, token: str, open_id: str) -> None:
        held = self.grants.get(token)
        if held is not None and held.open_id != open_id:
            raise ControlError("that token belongs to another user", 409)

    def user_of(self, access_token: str | None) -> User | None:
        """The user a live, unexpired access token belongs to."""
        grant = self.grants.get(access_token or "")
        if grant is None or grant.kind != "access" or grant.state != "live" or self.now() >= grant.expires_at:
            return None
        user = self.users.get(grant.open_id)
        return None if user is None or user.revoked else user

    def revoke(self, user: User) -> None:
        user.revoked = True
        for grant in self.grants.values():
            if grant.open_id == user.open_id:
                grant.state = "revoked"

    # -- rate limits --
    def admit(self, endpoint: str) -> float | None:
        """Count a call of ``endpoint``: ``None`` when admitted, else the seconds until a slot frees."""
        with self.lock:
            self.calls[endpoint] += 1
            now = self.now()
            window = self.windows[endpoint]
            while window and window[0] <= now - WINDOW_SECONDS:
                window.popleft()
            if len(window) >= self.per_minute[endpoint]:
                self.rate_limited[endpoint] += 1
                return window[0] + WINDOW_SECONDS - now if window else WINDOW_SECONDS
            window.append(now)
            return None

    # -- webhooks (the caller holds the lock) --
    def due_ready_events(self) -> None:
        """Queue ``portability.download.ready`` for each added request newly past its ready time."""
        now = self.now()
        for request in self.requests.values():
            if request.added and not request.notified and request.ready_at <= now:
                cancelled = request.cancelled_at
                request.notified = True
                if cancelled is None or cancelled >= request.ready_at:
                    content = {"request_id": request.request_id}
                    self.send_webhook(
                        "portability.download.ready", request.owner, content, request.request_id
                    )

    def send_webhook(
        self, event: str, open_id: str, content: dict[str, Any], request_id: int | None = None
    ) -> None:
        if not self.webhook_url:
            return
        body = webhook_body(event, open_id, content, client_key=self.client_key, create_time=int(self.now()))
        self.webhook_jobs.put(
            WebhookJob(
                self.generation,
                self.webhook_url,
                self.client_secret,
                body,
                event,
                open_id,
                request_id,
                self.webhook_repeat,
            )
        )


# -- HTTP ------------------------------------------------------------------------------------------
class EmulatorHandler(BaseHTTPRequestHandler):
    """Serves the TikTok endpoints and the control endpoints."""

    protocol_version = "HTTP/1.1"
    server: EmulatorServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet: tests read their own output."""

    @property
    def state(self) -> State:
        return self.server.state

    # -- control plane -------------------------------------------------------------------------
    def do_PUT(self) -> None:
        self._control(self._put, self._read_body())

    def do_GET(self) -> None:
        self._control(self._get, self._read_body())

    def _control(self, route: Any, body: bytes) -> None:
        """Run a control ``route(path, spec)`` and answer its ``(status, document)`` as JSON."""
        path = urllib.parse.urlsplit(self.path).path
        try:
            spec = json.loads(body or b"{}")
            if not isinstance(spec, dict):
                raise ControlError("the body must be a JSON object")
            status, document = route(path, spec)
        except ControlError as error:
            status, document = error.status, {"error": str(error)}
        except (ValueError, TypeError, KeyError, ArchiveSpecError) as error:
            status, document = 400, {"error": f"{type(error).__name__}: {error}"}
        self._send_json(status, document)

    def _put(self, path: str, spec: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if match := _REQUEST.fullmatch(path):
            request_id = int(match.group(1))
            if match.group(2):
                return 200, self._set_request_state(request_id, spec)
            return 200, self._register(request_id, spec)
        if (match := _USER.fullmatch(path)) and not match.group(2):
            return 200, self._put_user(urllib.parse.unquote(match.group(1)), spec)
        state = self.state
        if path == "/_emulator/app":
            with state.lock:
                state.client_key = _text(spec.get("client_key", state.client_key), "client_key")
                state.client_secret = _text(spec.get("client_secret", state.client_secret), "client_secret")
                return 200, {"client_key": state.client_key, "client_secret": state.client_secret}
        if path == "/_emulator/webhooks":
            url = spec.get("url")
            if url is not None:
                _text(url, "url")
            with state.lock:
                state.webhook_url = url
                state.webhook_repeat = _positive_int(spec.get("repeat", 1), "repeat")
            return 200, self._webhooks()
        if path == "/_emulator/limits":
            per_minute = spec["per_minute"]
            if isinstance(per_minute, bool) or not isinstance(per_minute, int) or per_minute < 0:
                raise ControlError("per_minute must be a non-negative integer")
            endpoint = spec.get("endpoint")
            if endpoint is not None and endpoint not in ENDPOINTS:
                raise ControlError(f"endpoint must be one of {', '.join(ENDPOINTS)}")
            with state.lock:
                for name in [endpoint] if endpoint else ENDPOINTS:
                    state.per_minute[name] = per_minute
                return 200, {"per_minute": dict(state.per_minute)}
        raise ControlError("unknown control path", 404)

    def _get(self, path: str, _: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        state = self.state
        if path == "/_emulator/health":
            return 200, {"ok": True}
        if match := _REQUEST.fullmatch(path):
            if match.group(2):
                raise ControlError("unknown control path", 404)
            with state.lock:
                return 200, self._request_document(int(match.group(1)))
        if (match := _USER.fullmatch(path)) and not match.group(2):
            with state.lock:
                return 200, self._user_document(urllib.parse.unquote(match.group(1)))
        if path == "/_emulator/clock":
            return 200, {"now": state.now()}
        if path == "/_emulator/app":
            with state.lock:
                return 200, {"client_key": state.client_key, "client_secret": state.client_secret}
        if path == "/_emulator/webhooks":
            return 200, self._webhooks()
        if path == "/_emulator/stats":
            with state.lock:
                return 200, {
                    "calls": dict(state.calls),
                    "rate_limited": dict(state.rate_limited),
                    "per_minute": dict(state.per_minute),
                }
        raise ControlError("unknown control path", 404)

    def _post_control(self, path: str, spec: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        state = self.state
        if path == "/_emulator/reset":
            with state.lock:
                state.reset()
            return 200, {"ok": True}
        if path == "/_emulator/clock":
            advance = spec.get("advance", 0)
            if isinstance(advance, bool) or not isinstance(advance, int | float) or not advance >= 0:
                raise ControlError(
                    "advance must be a non-negative number of seconds: the clock only moves on"
                )
            with state.lock:
                state.offset += float(advance)
                state.due_ready_events()
            return 200, {"now": state.now()}
        if (match := _USER.fullmatch(path)) and match.group(2):
            reason = spec.get("reason", 1)
            if isinstance(reason, bool) or reason not in range(6):
                raise ControlError("reason must be an integer from 0 to 5")
            with state.lock:
                user = state.users.get(urllib.parse.unquote(match.group(1)))
                if user is None:
                    raise ControlError("no such user", 404)
                if not user.revoked:
                    state.revoke(user)
                    state.send_webhook("authorization.removed", user.open_id, {"reason": reason})
                return 200, self._user_document(user.open_id)
        raise ControlError("unknown control path", 404)

    def _register(self, request_id: int, spec: dict[str, Any]) -> dict[str, Any]:
        token = _text(spec["token"], "token")
        archive_spec = spec.get("archive")
        if archive_spec is None:
            archive_spec = {"kind": "default", "size": int(spec.get("size", DEFAULT_ARCHIVE_SIZE))}
        archive = build_from_spec(request_id, _archive_spec(archive_spec))
        status = spec.get("status", "downloading")
        if status not in STATUSES:
            raise ControlError(f"status must be one of {', '.join(STATUSES)}")
        transfer, ranges = spec.get("transfer", "chunked"), spec.get("ranges", "ignore")
        if transfer not in ("chunked", "length") or ranges not in ("ignore", "honour"):
            raise ControlError('transfer is "chunked" or "length"; ranges is "ignore" or "honour"')
        scopes = _scopes(spec.get("scopes", IMPLICIT_SCOPES))
        state = self.state
        with state.lock:
            now = state.now()
            grant = state.grants.get(token)
            if grant is None:
                user = User(tokens.open_id(), scopes, token, None, now + ACCESS_EXPIRES_IN, 0.0)
                state.users[user.open_id] = user
                state.grants[token] = Grant(user.open_id, "access", user.access_expires_at)
            else:
                user = state.users[grant.open_id]
            request = DataRequest(
                request_id=request_id,
                owner=user.open_id,
                apply_time=now,
                ready_at=now,
                archive_spec=archive_spec,
                transfer=transfer,
                chunk_size=_positive_int(spec.get("chunk_size", 64 * 1024), "chunk_size"),
                scopes=scopes,
                fault=spec.get("fault"),
                fault_times=spec.get("fault_times"),
                check_fault=_check_fault(spec.get("check_fault")),
                bytes_per_second=spec.get("bytes_per_second"),
                ranges=ranges,
                built=archive,
                notified=True,
            )
            _force(request, status, now, math.inf)
            self._replace(request, user)
        return {
            "size_bytes": len(archive.data),
            "sha256": hashlib.sha256(archive.data).hexdigest(),
            "entries": list(archive.entries[:LISTED_ENTRIES]),
            "entry_count": len(archive.entries),
            "owner": user.open_id,
        }

    def _replace(self, request: DataRequest, owner: User) -> None:
        """Store ``request`` under its id (the caller holds the lock), replacing an earlier one."""
        state = self.state
        previous = state.requests.get(request.request_id)
        if previous is not None and previous.owner in state.users:
            state.users[previous.owner].requests.remove(request.request_id)
        state.requests[request.request_id] = request
        owner.requests.append(request.request_id)

    def _set_request_state(self, request_id: int, spec: dict[str, Any]) -> dict[str, Any]:
        status = spec.get("status")
        if status not in STATUSES:
            raise ControlError(f"status must be one of {', '.join(STATUSES)}")
        state = self.state
        with state.lock:
            request = state.requests.get(request_id)
            if request is None:
                raise ControlError("not registered", 404)
            owner = state.users.get(request.owner)
            prepare = owner.prepare_seconds if owner else PREPARE_SECONDS
            if status in ("expired", "cancelled") and request.status(state.now()) == "pending":
                request.notified = True  # it never was ready: no portability.download.ready
            _force(request, status, state.now(), prepare)
            state.due_ready_events()
            return self._request_document(request_id)

    def _request_document(self, request_id: int) -> dict[str, Any]:
        request = self.state.requests.get(request_id)
        if request is None:
            raise ControlError("not registered", 404)
        return {
            "request_id": str(request_id),
            "owner": request.owner,
            "status": request.status(self.state.now()),
            "apply_time": request.apply_time,
            "ready_at": request.ready_at if math.isfinite(request.ready_at) else None,
            "downloads": request.downloads,
            "checks": request.checks,
            "cancels": request.cancels,
            "calls": list(request.calls),
            "last_body_sent_at": request.last_body_sent_at,
        }

    def _put_user(self, open_id: str, spec: dict[str, Any]) -> dict[str, Any]:
        if not open_id:
            raise ControlError("an open_id is needed")
        settings: dict[str, Any] = {}
        if "scopes" in spec:
            settings["scopes"] = _scopes(spec["scopes"])
        for name in ("access_expires_in", "refresh_expires_in", "archive_size"):
            if name in spec:
                settings[name] = _positive_int(spec[name], name)
        if "prepare_seconds" in spec:
            prepare = spec["prepare_seconds"]
            if isinstance(prepare, bool) or not isinstance(prepare, int | float) or not prepare >= 0:
                raise ControlError("prepare_seconds must be a non-negative number")
            settings["prepare_seconds"] = float(prepare)
        if "archive" in spec:
            settings["archive"] = None if spec["archive"] is None else _archive_spec(spec["archive"])
        if "oauth_fault" in spec:
            fault = spec["oauth_fault"]
            if fault is not None and not isinstance(fault, dict):
                raise ControlError("oauth_fault is an object or null")
            settings["oauth_fault"] = fault
            settings["oauth_fault_times"] = _positive_int(fault.get("times", 1), "times") if fault else 0
        access = _text(spec["access_token"], "access_token") if "access_token" in spec else None
        refresh = _text(spec["refresh_token"], "refresh_token") if "refresh_token" in spec else None
        state = self.state
        with state.lock:
            user = state.users.get(open_id)
            fresh = user is None or user.revoked
            if user is None:
                user = User(open_id, USER_SCOPES, "", None, 0.0, 0.0)
            for name, value in settings.items():
                setattr(user, name, value)
            if fresh or access is not None:
                state.issue_access(user, access)
            if fresh or refresh is not None:
                state.issue_refresh(user, refresh)
            user.revoked = False
            state.users[open_id] = user
            return {
                "open_id": open_id,
                "access_token": user.access_token,
                "refresh_token": user.refresh_token,
                "access_expires_at": user.access_expires_at,
                "refresh_expires_at": user.refresh_expires_at,
            }

    def _user_document(self, open_id: str) -> dict[str, Any]:
        user = self.state.users.get(open_id)
        if user is None:
            raise ControlError("no such user", 404)
        return {
            "open_id": user.open_id,
            "access_token": user.access_token,
            "refresh_token": user.refresh_token,
            "access_expires_at": user.access_expires_at,
            "refresh_expires_at": user.refresh_expires_at if user.refresh_token else None,
            "scopes": list(user.scopes),
            "refreshes": user.refreshes,
            "refused_refreshes": user.refused_refreshes,
            "revoked": user.revoked,
            "adds": user.adds,
            "requests": [str(request_id) for request_id in user.requests],
        }

    def _webhooks(self) -> dict[str, Any]:
        with self.state.lock:
            return {"url": self.state.webhook_url, "deliveries": list(self.state.deliveries)}

    # -- the API ---------------------------------------------------------------------------------
    def do_POST(self) -> None:
        body = self._read_body()
        url = urllib.parse.urlsplit(self.path)
        endpoint, query = url.path, urllib.parse.parse_qs(url.query, keep_blank_values=True)
        if endpoint.startswith("/_emulator/"):
            self._control(self._post_control, body)
            return
        if endpoint in (TOKEN_PATH, REVOKE_PATH):
            self._oauth(endpoint, body)
            return
        name = PORTABILITY_ENDPOINTS.get(endpoint)
        if name is None:
            self._send_tiktok_error(404, "invalid_params", "Unknown endpoint.")
            return
        retry_after = self.state.admit(name)
        if retry_after is not None:
            self._send_tiktok_error(
                429,
                "rate_limit_exceeded",
                "API rate limit exceeded, please retry later.",
                {"Retry-After": str(max(1, math.ceil(retry_after)))},
            )
            return
        with self.state.lock:
            self.state.due_ready_events()
            user = self.state.user_of(self._bearer_token())
        if user is None:
            self._send_tiktok_error(401, "access_token_invalid", _TOKEN_INVALID)
            return
        if name == "cancel":
            self._cancel(user, body, query)
            return
        if not self._is_json():
            self._send_tiktok_error(400, "invalid_params", "Content-Type must be application/json.")
            return
        if name == "add":
            self._add(user, body, query)
            return
        request_id = _request_id(body)
        if request_id is None:
            self._send_tiktok_error(400, "invalid_params", _BAD_REQUEST_ID)
        elif name == "check":
            self._check(user, request_id, query)
        else:
            self._download(user, request_id)

    def _owned(self, user: User, request: DataRequest | None) -> bool:
        """Whether ``user`` owns ``request`` and granted a portability scope; answers the error if not."""
        if request is None or request.owner != user.open_id:
            self._send_tiktok_error(400, "invalid_params", _BAD_REQUEST_ID)
            return False
        scopes = request.scopes if request.scopes is not None else user.scopes
        if not _portability_families(scopes):
            self._send_tiktok_error(401, "scope_not_authorized", _NO_SCOPE)
            return False
        return True

    def _add(self, user: User, body: bytes, query: dict[str, list[str]]) -> None:
        """Add Data Request: a new pending request, ready after the user's ``prepare_seconds``."""
        families = _portability_families(user.scopes)
        if not families:
            self._send_tiktok_error(401, "scope_not_authorized", _NO_SCOPE)
            return
        fields = _fields(query)
        if fields is not None and set(fields) != {"request_id"}:
            self._send_tiktok_error(400, "invalid_params", "Invalid `fields`: only request_id is available.")
            return
        document = _json_object(body)
        data_format = document.get("data_format") if document else None
        categories = document.get("category_selection_list") if document else None
        if data_format not in DATA_FORMATS:
            self._send_tiktok_error(400, "invalid_params", "Invalid `data_format`: json or text.")
            return
        if (
            not isinstance(categories, list)
            or not categories
            or any(not isinstance(c, str) or c not in CATEGORY_FAMILY for c in categories)
        ):
            self._send_tiktok_error(
                400,
                "invalid_params",
                "Invalid `category_selection_list`: all_data, video, profile, activity, direct_message.",
            )
            return
        if "all" not in families and any(CATEGORY_FAMILY[c] not in families for c in categories):
            self._send_tiktok_error(
                400, "scope_permission_missed", "The user did not grant the scope these categories need."
            )
            return
        state = self.state
        with state.lock:
            single = all(
                scope.endswith(".single") for scope in user.scopes if _PORTABILITY_SCOPE.fullmatch(scope)
            )
            if single and user.adds >= 1:
                refused = True
            else:
                refused = False
                request_id = secrets.randbelow(_INT64_MAX - 2**60) + 2**60 + 1
                while request_id in state.requests:
                    request_id = secrets.randbelow(_INT64_MAX - 2**60) + 2**60 + 1
                now = state.now()
                archive = user.archive or {"kind": "default", "size": user.archive_size}
                request = DataRequest(
                    request_id=request_id,
                    owner=user.open_id,
                    apply_time=now,
                    ready_at=now + user.prepare_seconds,
                    archive_spec=archive,
                    data_format=data_format,
                    categories=tuple(categories),
                    added=True,
                )
                user.adds += 1
                self._replace(request, user)
                state.due_ready_events()
        if refused:
            self._send_tiktok_error(
                400,
                "scope_permission_missed",
                "A single-request scope allows one data request; this user already made it.",
            )
            return
        self._send_ok({"data": {"request_id": request_id}})

    def _check(self, user: User, request_id: int, query: dict[str, list[str]]) -> None:
        """Check Status: only the request's owner learns its status; anyone else gets invalid_params."""
        fields = _fields(query) or DEFAULT_CHECK_FIELDS
        if any(name not in CHECK_FIELDS for name in fields):
            self._send_tiktok_error(400, "invalid_params", f"Invalid `fields`: {', '.join(CHECK_FIELDS)}.")
            return
        state = self.state
        fault: dict[str, Any] | None = None
        with state.lock:
            request = state.requests.get(request_id)
            if request is not None:
                request.checks += 1
                if request.check_fault and request.owner == user.open_id:
                    fault = dict(request.check_fault)
                    if fault.get("times") is not None:
                        request.check_fault["times"] -= 1
                        if request.check_fault["times"] <= 0:
                            request.check_fault = None
            now = state.now()
        if not self._owned(user, request):
            return
        assert request is not None
        if fault is not None:
            self._serve(request, {"kind": "error", **fault})
            return
        values: dict[str, Any] = {
            "request_id": request_id,
            "apply_time": int(request.apply_time),
            "collect_time": request.collect_time(now),
            "status": request.status(now),
            "data_format": request.data_format,
            "category_selection_list": list(request.categories),
        }
        self._send_ok({"data": {name: values[name] for name in dict.fromkeys(fields)}})

    def _cancel(self, user: User, body: bytes, query: dict[str, list[str]]) -> None:
        """Cancel: from the body's ``request_id``, or the ``request_id`` query parameter, or both."""
        in_query = query.get("request_id")
        from_query: int | None = None
        if in_query is not None:
            from_query = _int64(in_query[-1]) if len(set(in_query)) == 1 else None
            if from_query is None:
                self._send_tiktok_error(400, "invalid_params", _BAD_REQUEST_ID)
                return
        from_body: int | None = None
        if body.strip() or in_query is None:
            if not self._is_json():
                self._send_tiktok_error(400, "invalid_params", "Content-Type must be application/json.")
                return
            document = _json_object(body)
            if document is None or (in_query is None and "request_id" not in document):
                self._send_tiktok_error(400, "invalid_params", _BAD_REQUEST_ID)
                return
            if "request_id" in document:
                from_body = _request_id(body)
                if from_body is None:
                    self._send_tiktok_error(400, "invalid_params", _BAD_REQUEST_ID)
                    return
        if from_body is not None and from_query is not None and from_body != from_query:
            self._send_tiktok_error(400, "invalid_params", "The body and the query name different requests.")
            return
        request_id = from_body if from_body is not None else from_query
        assert request_id is not None
        state = self.state
        status: str | None = None
        with state.lock:
            request = state.requests.get(request_id)
            if request is not None:
                request.cancels += 1
            if request is not None and request.owner == user.open_id:
                now = state.now()
                status = request.status(now)
                if status in ("pending", "downloading") and _portability_families(
                    request.scopes if request.scopes is not None else user.scopes
                ):
                    request.cancelled_at = now
        if not self._owned(user, request):
            return
        if status in ("expired", "cancelled"):
            self._send_tiktok_error(400, "invalid_params", f"The request is already {status}.")
            return
        self._send_ok({})

    def _download(self, user: User, request_id: int) -> None:
        state = self.state
        with state.lock:
            request = state.requests.get(request_id)
            fault = None
            status = None
            if request is not None:
                status = request.status(state.now())
                request.downloads += 1
                fault = request.fault
                if fault is not None and request.fault_times is not None:
                    if request.fault_times <= 0:
                        fault = None
                    else:
                        request.fault_times -= 1
                request.calls.append(
                    {
                        "at": time.time(),
                        "range": self.headers.get("Range"),
                        "fault": (fault or {}).get("kind"),
                    }
                )
        if not self._owned(user, request):
            return
        assert request is not None
        if status != "downloading":
            self._send_tiktok_error(400, "invalid_params", _BAD_REQUEST_ID)
            return
        self._serve(request, fault)

    def _serve(self, request: DataRequest, fault: dict[str, Any] | None) -> None:
        kind = (fault or {}).get("kind")
        if kind == "error":
            assert fault is not None
            headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else {}
            self._send_tiktok_error(
                int(fault.get("status", 400)),
                fault["code"],
                fault.get("message", "Emulated failure."),
                headers,
            )
        elif kind == "html":
            assert fault is not None
            page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
            self._send(int(fault.get("status", 502)), page, "text/html")
        elif kind == "not_zip":
            self._send(200, b"this is not a zip archive, just some bytes\n" * 20, "application/octet-stream")
        elif kind == "empty":
            self._send(200, b"", "application/zip")
        elif kind == "drop":
            self._reset()
        elif kind == "no_central_directory":
            data = request.data
            self._send(
                200, data[: data.rindex(b"PK\x01\x02", 0, data.rindex(b"PK\x05\x06"))], "application/zip"
            )
        else:
            self._stream_archive(request, fault)

    def _reset(self) -> None:
        """Close the connection with a TCP reset (RST), not a clean FIN."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _stream_archive(self, request: DataRequest, fault: dict[str, Any] | None) -> None:
        data = memoryview(request.data)
        total = len(data)
        status, first = 200, 0
        wanted = _RANGE.fullmatch((self.headers.get("Range") or "").strip())
        if wanted and request.ranges == "honour":
            first = int(wanted.group(1))
            if first >= total:
                self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{total}"})
                return
            status, data = 206, data[first:]
        kind = (fault or {}).get("kind")
        # A fault's cut point is a byte of the archive: a resumed answer past it breaks at once.
        stop_at = int(fault.get("after_bytes", 0)) - first if fault and kind else len(data)
        stop_at = max(0, min(stop_at, len(data)))
        chunked = request.transfer == "chunked"
        self.send_response(status)
        self.send_header("Content-Type", "application/zip")
        self.send_header("X-Tt-Logid", self.state.next_log_id())
        if status == 206:
            self.send_header("Content-Range", f"bytes {first}-{total - 1}/{total}")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        step = request.chunk_size
        started = time.monotonic()
        try:
            for offset in range(0, stop_at, step):
                piece = data[offset : min(offset + step, stop_at)]
                if chunked:
                    self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
                else:
                    self.wfile.write(piece)
                if request.bytes_per_second:
                    # Pace the stream like a slow network: never ahead of the configured rate.
                    due = started + (offset + len(piece)) / request.bytes_per_second
                    time.sleep(max(0.0, due - time.monotonic()))
            if kind == "reset":
                self._reset()
            elif kind == "stall":
                assert fault is not None
                time.sleep(float(fault.get("seconds", 60)))
            elif kind != "truncate" and chunked:
                self.wfile.write(b"0\r\n\r\n")
            if not kind:
                request.last_body_sent_at = time.time()
        except (BrokenPipeError, ConnectionResetError):
            pass
        if kind:
            self.close_connection = True

    # -- OAuth -----------------------------------------------------------------------------------
    def _oauth(self, endpoint: str, body: bytes) -> None:
        name = "oauth" if endpoint == TOKEN_PATH else "revoke"
        retry_after = self.state.admit(name)
        if retry_after is not None:
            self._send_oauth_error(
                429,
                "rate_limit_exceeded",
                "Rate limit exceeded, please retry later.",
                {"Retry-After": str(max(1, math.ceil(retry_after)))},
            )
            return
        if (self.headers.get("Content-Type") or "").split(";")[0].strip().lower() != _FORM:
            self._send_oauth_error(400, "invalid_request", f"Content-Type must be {_FORM}.")
            return
        try:
            form = {
                key: values[-1]
                for key, values in urllib.parse.parse_qs(body.decode(), keep_blank_values=True).items()
            }
        except (ValueError, UnicodeDecodeError):
            self._send_oauth_error(400, "invalid_request", "The form could not be parsed.")
            return
        needed = ("client_key", "client_secret", "grant_type" if name == "oauth" else "token")
        missing = [key for key in needed if not form.get(key)]
        if missing:
            self._send_oauth_error(400, "invalid_request", f"Missing parameter: {', '.join(missing)}.")
            return
        with self.state.lock:
            app_ok = hmac.compare_digest(
                f"{form['client_key']}\n{form['client_secret']}".encode(),
                f"{self.state.client_key}\n{self.state.client_secret}".encode(),
            )
        if not app_ok:
            self._send_oauth_error(401, "invalid_client", "Client key or secret is invalid.")
            return
        if name == "revoke":
            self._revoke(form["token"])
            return
        if form["grant_type"] != "refresh_token":
            self._send_oauth_error(
                400, "invalid_request", "Unsupported grant_type: the emulator refreshes only."
            )
            return
        if not form.get("refresh_token"):
            self._send_oauth_error(400, "invalid_request", "Missing parameter: refresh_token.")
            return
        self._refresh(form["refresh_token"])

    def _refresh(self, refresh_token: str) -> None:
        state = self.state
        refusal: str | None = None
        fault: dict[str, Any] | None = None
        answer: dict[str, Any] = {}
        with state.lock:
            now = state.now()
            grant = state.grants.get(refresh_token)
            user = state.users.get(grant.open_id) if grant and grant.kind == "refresh" else None
            if grant is None or user is None:
                refusal = "The refresh token is invalid."
            else:
                if user.oauth_fault and user.oauth_fault_times > 0:
                    user.oauth_fault_times -= 1
                    fault = user.oauth_fault
                if grant.state == "rotated":
                    refusal = "The refresh token was already used: refresh tokens rotate."
                elif grant.state == "revoked" or user.revoked:
                    refusal = "The refresh token was revoked."
                elif now >= grant.expires_at:
                    refusal = "The refresh token has expired."
                if refusal is not None and fault is None:
                    user.refused_refreshes += 1
                elif refusal is None and (fault is None or fault.get("rotate")):
                    state.issue_access(user)
                    state.issue_refresh(user)
                    user.refreshes += 1
                    answer = {
                        "access_token": user.access_token,
                        "expires_in": user.access_expires_in,
                        "open_id": user.open_id,
                        "refresh_expires_in": user.refresh_expires_in,
                        "refresh_token": user.refresh_token,
                        "scope": ",".join(user.scopes),
                        "token_type": "Bearer",
                    }
        if fault is not None:
            page = b"<html><body><h1>Internal Server Error</h1></body></html>"
            self._send(int(fault.get("status", 500)), page, "text/html", {"X-Tt-Logid": state.next_log_id()})
        elif refusal is not None:
            self._send_oauth_error(400, "invalid_grant", refusal)
        else:
            log_id = state.next_log_id()
            headers = {"X-Tt-Logid": log_id, "Cache-Control": "no-store"}
            self._send(200, json.dumps(answer).encode(), "application/json", headers)

    def _revoke(self, token: str) -> None:
        state = self.state
        with state.lock:
            grant = state.grants.get(token)
            user = state.users.get(grant.open_id) if grant else None
            if user is not None and not user.revoked:
                state.revoke(user)
                state.send_webhook("authorization.removed", user.open_id, {"reason": 1})
                revoked = True
            else:
                revoked = False
        if not revoked:
            self._send_oauth_error(400, "invalid_request", "The token is invalid or already revoked.")
            return
        self._send(200, b"{}", "application/json", {"X-Tt-Logid": state.next_log_id()})

    # -- helpers ---------------------------------------------------------------------------------
    def _bearer_token(self) -> str | None:
        header = self.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None

    def _is_json(self) -> bool:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip() == "application/json"

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_ok(self, document: dict[str, Any]) -> None:
        log_id = self.state.next_log_id()
        document = {**document, "error": {"code": "ok", "message": "", "log_id": log_id}}
        self._send(200, json.dumps(document).encode(), "application/json", {"X-Tt-Logid": log_id})

    def _send_tiktok_error(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        log_id = self.state.next_log_id()
        document = {
            "data": {},
            "error": {"code": code, "http_status_code": status, "log_id": log_id, "message": message},
        }
        self._send(
            status,
            json.dumps(document).encode(),
            "application/json",
            {"X-Tt-Logid": log_id, **(headers or {})},
        )

    def _send_oauth_error(
        self, status: int, error: str, description: str, headers: dict[str, str] | None = None
    ) -> None:
        log_id = self.state.next_log_id()
        document = {"error": error, "error_description": description, "log_id": log_id}
        self._send(
            status,
            json.dumps(document).encode(),
            "application/json",
            {"X-Tt-Logid": log_id, "Cache-Control": "no-store", **(headers or {})},
        )

    def _send_json(self, status: int, document: dict[str, Any]) -> None:
        self._send(status, json.dumps(document).encode(), "application/json")

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


# -- parsing ---------------------------------------------------------------------------------------
def _json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object (floats and NaN kept apart from integers), or ``None``."""
    try:
        document = json.loads(body, parse_float=lambda _: None, parse_constant=lambda _: None)
    except (ValueError, UnicodeDecodeError):
        return None
    return document if isinstance(document, dict) else None


def _request_id(body: bytes) -> int | None:
    """The body's ``request_id`` if it is a JSON integer in int64 range, exactly as TikTok wants it."""
    document = _json_object(body)
    value = document.get("request_id") if document is not None else None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _INT64_MAX:
        return None
    return value


def _int64(text: str) -> int | None:
    """A query parameter's positive int64, written in plain decimal digits."""
    if not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if 0 < value <= _INT64_MAX else None


def _fields(query: dict[str, list[str]]) -> tuple[str, ...] | None:
    """The ``fields`` query parameter's names, or ``None`` when it is absent or empty."""
    names = tuple(
        name.strip() for value in query.get("fields", []) for name in value.split(",") if name.strip()
    )
    return names or None


def _portability_families(scopes: Iterable[str]) -> set[str]:
    """The portability families (``all``, ``activity``, …) the scopes grant."""
    return {match.group(1) for scope in scopes if (match := _PORTABILITY_SCOPE.fullmatch(scope))}


def _force(request: DataRequest, status: str, now: float, prepare: float) -> None:
    """Set ``request``'s times so that its status is ``status`` at ``now``."""
    request.cancelled_at = None
    if status == "pending":
        request.ready_at = now + prepare
    elif status == "downloading":
        request.ready_at = min(request.ready_at, now) if request.ready_at > now - DOWNLOADABLE_FOR else now
    elif status == "expired":
        request.ready_at = min(request.ready_at, now - DOWNLOADABLE_FOR - 1)
    else:
        request.cancelled_at = now


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ControlError(f"{name} must be a non-empty string")
    return value


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ControlError(f"{name} must be a positive integer")
    return value


def _scopes(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(scope, str) for scope in value):
        raise ControlError("scopes must be a list of strings")
    return tuple(value)


def _check_fault(value: Any) -> dict[str, Any] | None:
    """A registration's ``check_fault``: a TikTok error (``status``, ``code``, optional ``message``,
    ``retry_after``) for the next ``times`` Check Status calls (all when ``times`` is absent)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("code"), str):
        raise ControlError('check_fault is {"status", "code", "message", "retry_after", "times"}')
    fault = {key: value[key] for key in ("status", "code", "message", "retry_after", "times") if key in value}
    if "times" in fault:
        fault["times"] = _positive_int(fault["times"], "times")
    return fault


def _archive_spec(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or value.get("kind", "default") not in KINDS:
        raise ControlError(f"archive must be an object whose kind is one of {', '.join(KINDS)}")
    return dict(value)


# -- the server ------------------------------------------------------------------------------------
class EmulatorServer(ThreadingHTTPServer):
    """The emulator's HTTP server; ``state`` holds what it knows, a thread delivers its webhooks."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), EmulatorHandler)
        self.state = State()
        self._webhooks = threading.Thread(target=self._deliver_webhooks, name="webhooks", daemon=True)
        self._webhooks.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (as the function does when it abandons a stream) is not an error."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def server_close(self) -> None:
        super().server_close()
        self.state.webhook_jobs.put(None)

    def _deliver_webhooks(self) -> None:
        """Deliver queued webhooks in order; each is retried twice when it does not get a 200."""
        while (job := self.state.webhook_jobs.get()) is not None:
            with self.state.lock:
                if job.generation != self.state.generation:
                    continue  # queued before a reset
            for _ in range(job.repeat):
                for attempt in range(1, 4):
                    status = _post_webhook(job)
                    with self.state.lock:
                        if job.generation != self.state.generation:
                            break
                        entry: dict[str, Any] = {
                            "event": job.event,
                            "status": status,
                            "at": self.state.now(),
                            "attempt": attempt,
                            "user_openid": job.user_openid,
                        }
                        if job.request_id is not None:
                            entry["request_id"] = str(job.request_id)
                        self.state.deliveries.append(entry)
                    if status == 200:
                        break
                    if attempt < 3:
                        time.sleep(0.2 * attempt)


def _post_webhook(job: WebhookJob) -> int | None:
    """POST one signed webhook; the HTTP status, or ``None`` when the connection failed.

    ``http.client`` rather than ``urllib``: it sends ``TikTok-Signature`` spelt as TikTok spells it.
    """
    headers = {
        "Content-Type": "application/json",
        "TikTok-Signature": sign(job.client_secret, int(time.time()), job.body),
    }
    try:
        url = urllib.parse.urlsplit(job.url)
        kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        connection = kind(url.netloc, timeout=5)
        try:
            target = (url.path or "/") + (f"?{url.query}" if url.query else "")
            connection.request("POST", target, job.body, headers)
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()
    except (OSError, ValueError, http.client.HTTPException):
        return None


def main(argv: list[str] | None = None) -> None:
    """Run the emulator until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    args = parser.parse_args(argv)
    server = EmulatorServer(args.port)
    print(f"listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
