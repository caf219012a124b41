"""Control client of a running TikTok emulator (see ``tiktok_emulator``'s docstring for the endpoints)."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any


@dataclass
class Emulator:
    """Control client of a running TikTok emulator (see ``tiktok_emulator``'s docstring).

    Every method is one control call; a refused call raises ``urllib.error.HTTPError``.
    """

    url: str

    # -- requests ------------------------------------------------------------------------------------
    def register(
        self, request_id: int, token: str, *, archive: dict[str, Any] | None = None, **spec: Any
    ) -> dict[str, Any]:
        """Make an archive ready for ``request_id``, owned by ``token``.

        ``archive`` is an archive spec (``{"kind": "many_entries", "count": 100_000}``, …; see
        ``tests.harness.archives``); without it the default archive of ``size`` bytes. ``spec`` holds the
        other registration fields (``size``, ``transfer``, ``fault``, ``status``, …). Answers
        ``{"size_bytes", "sha256", "entries", "entry_count", "owner"}``.
        """
        body: dict[str, Any] = {"token": token, **spec}
        if archive is not None:
            body["archive"] = archive
        return self._call("PUT", f"/_emulator/requests/{request_id}", body)

    def downloads(self, request_id: int) -> int:
        """How many times the download endpoint was called for ``request_id``."""
        count: int = self.state(request_id)["downloads"]
        return count

    def state(self, request_id: int) -> dict[str, Any]:
        """The emulator's record of ``request_id``: ``status``, ``owner``, ``downloads``, ``checks``,
        ``cancels``, ``calls``, ``apply_time``, ``ready_at`` and ``last_body_sent_at``."""
        return self._call("GET", f"/_emulator/requests/{request_id}")

    def checks(self, request_id: int) -> int:
        """How many times the Check Status endpoint was asked about ``request_id``."""
        count: int = self.state(request_id)["checks"]
        return count

    def calls(self, request_id: int) -> list[dict[str, Any]]:
        """Each call of the download endpoint for ``request_id``: ``at``, ``range`` and ``fault``."""
        calls: list[dict[str, Any]] = self.state(request_id)["calls"]
        return calls

    def set_request_state(self, request_id: int, status: str) -> dict[str, Any]:
        """Force ``request_id`` to ``pending``, ``downloading``, ``expired`` or ``cancelled``; answers
        the record as ``state`` does."""
        return self._call("PUT", f"/_emulator/requests/{request_id}/state", {"status": status})

    # -- users ---------------------------------------------------------------------------------------
    def add_user(
        self,
        open_id: str,
        *,
        scopes: list[str] | None = None,
        access_token: str | None = None,
        refresh_token: str | None = None,
        access_expires_in: int | None = None,
        refresh_expires_in: int | None = None,
        prepare_seconds: float | None = None,
        archive_size: int | None = None,
        archive: dict[str, Any] | None = None,
        oauth_fault: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create the user ``open_id`` (or update the settings given of an existing one).

        Tokens are generated when not given. Answers ``{"open_id", "access_token", "refresh_token",
        "access_expires_at", "refresh_expires_at"}``.
        """
        settings = {
            "scopes": scopes,
            "access_token": access_token,
            "refresh_token": refresh_token,
            "access_expires_in": access_expires_in,
            "refresh_expires_in": refresh_expires_in,
            "prepare_seconds": prepare_seconds,
            "archive_size": archive_size,
            "archive": archive,
            "oauth_fault": oauth_fault,
        }
        body = {name: value for name, value in settings.items() if value is not None}
        return self._call("PUT", self._user_path(open_id), body)

    def set_oauth_fault(
        self, open_id: str, status: int = 500, times: int = 1, *, rotate: bool = False
    ) -> None:
        """Answer the next ``times`` refresh calls of ``open_id`` with ``status`` and an HTML page
        (after rotating the tokens when ``rotate``)."""
        fault = {"status": status, "times": times, "rotate": rotate}
        self._call("PUT", self._user_path(open_id), {"oauth_fault": fault})

    def user(self, open_id: str) -> dict[str, Any]:
        """The user's record: current tokens, ``refreshes``, ``refused_refreshes``, ``revoked``,
        ``adds``, ``scopes`` and ``requests`` (ids as decimal strings)."""
        return self._call("GET", self._user_path(open_id))

    def disconnect_user(self, open_id: str, reason: int = 1) -> dict[str, Any]:
        """The user disconnects the app on TikTok's side: tokens revoked, ``authorization.removed``
        sent with ``reason``; answers the user's record."""
        return self._call("POST", self._user_path(open_id) + "/revoke", {"reason": reason})

    # -- clock, app, webhooks, limits ----------------------------------------------------------------
    def advance_clock(self, seconds: float) -> float:
        """Move the emulated clock ``seconds`` forward; returns the new emulated time."""
        now: float = self._call("POST", "/_emulator/clock", {"advance": seconds})["now"]
        return now

    def clock(self) -> float:
        """The emulated time (Unix seconds)."""
        now: float = self._call("GET", "/_emulator/clock")["now"]
        return now

    def set_app(self, client_key: str, client_secret: str) -> None:
        """Set the app's credentials (the OAuth endpoints check them; webhooks are signed with the secret)."""
        self._call("PUT", "/_emulator/app", {"client_key": client_key, "client_secret": client_secret})

    def app(self) -> dict[str, str]:
        """The app's ``client_key`` and ``client_secret``."""
        document: dict[str, str] = self._call("GET", "/_emulator/app")
        return document

    def set_webhook_url(self, url: str | None, *, repeat: int = 1) -> None:
        """Where webhooks go (``None``: nowhere); each event is sent ``repeat`` times."""
        self._call("PUT", "/_emulator/webhooks", {"url": url, "repeat": repeat})

    def webhooks(self) -> dict[str, Any]:
        """``{"url", "deliveries": [{"event", "status", "at", "attempt", "user_openid", …}]}``."""
        return self._call("GET", "/_emulator/webhooks")

    def set_rate_limit(self, per_minute: int, endpoint: str | None = None) -> None:
        """Calls a minute admitted per endpoint (all of them, or only ``endpoint``)."""
        body: dict[str, Any] = {"per_minute": per_minute}
        if endpoint is not None:
            body["endpoint"] = endpoint
        self._call("PUT", "/_emulator/limits", body)

    def stats(self) -> dict[str, Any]:
        """``{"calls": {endpoint: n}, "rate_limited": {endpoint: n}, "per_minute": {endpoint: n}}``."""
        return self._call("GET", "/_emulator/stats")

    def reset(self) -> None:
        """Forget everything: requests, users, clock offset, app, webhooks, counts and limits."""
        self._call("POST", "/_emulator/reset", {})

    # -- plumbing ------------------------------------------------------------------------------------
    @staticmethod
    def _user_path(open_id: str) -> str:
        return "/_emulator/users/" + urllib.parse.quote(open_id, safe="")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=120) as response:
            document: dict[str, Any] = json.loads(response.read())
            return document
