"""Control client of a running TikTok emulator (see ``tiktok_emulator``'s docstring for the endpoints)."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from typing import Any


@dataclass
class Emulator:
    """Control client of a running TikTok emulator (see ``tiktok_emulator``'s docstring)."""

    url: str

    def register(self, request_id: int, token: str, **spec: Any) -> dict[str, Any]:
        """Make an archive ready for ``request_id``, owned by ``token``; returns its size and sha256."""
        return self._call("PUT", f"/_emulator/requests/{request_id}", {"token": token, **spec})

    def downloads(self, request_id: int) -> int:
        """How many times the download endpoint was called for ``request_id``."""
        count: int = self.state(request_id)["downloads"]
        return count

    def state(self, request_id: int) -> dict[str, Any]:
        """The emulator's record of ``request_id``: ``downloads`` and ``last_body_sent_at``."""
        return self._call("GET", f"/_emulator/requests/{request_id}")

    def checks(self, request_id: int) -> int:
        """How many times the Check Status endpoint was asked about ``request_id``."""
        count: int = self.state(request_id)["checks"]
        return count

    def calls(self, request_id: int) -> list[dict[str, Any]]:
        """Each call of the download endpoint for ``request_id``: ``at``, ``range`` and ``fault``."""
        calls: list[dict[str, Any]] = self.state(request_id)["calls"]
        return calls

    def reset(self) -> None:
        """Forget every registration."""
        self._call("POST", "/_emulator/reset", {})

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=120) as response:
            document: dict[str, Any] = json.loads(response.read())
            return document
