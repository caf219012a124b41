"""TikTok's API as the service uses it, one small module per concern.

- :mod:`.budget`: the attempt budget of one operation and the urllib3 retry policy drawing on it;
- :mod:`.transport`: the POST every call makes, and how an unexpected answer becomes an error;
- :mod:`.archive`: the download endpoint and the self-repairing archive stream;
- :mod:`.portability`: add a data request, check its status, cancel it;
- :mod:`.oauth`: refresh a user's tokens, revoke them.

:class:`TikTokClient` puts them behind one object built once per container.
"""

from __future__ import annotations

import urllib3

from tiktok_archive.adapters.tiktok.archive import ArchiveStream, DownloadEndpoint
from tiktok_archive.adapters.tiktok.budget import AttemptBudget, BudgetedRetry
from tiktok_archive.adapters.tiktok.oauth import OAuthEndpoint
from tiktok_archive.adapters.tiktok.portability import PortabilityEndpoints
from tiktok_archive.adapters.tiktok.transport import Transport, build_pool
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download import DownloadRequest
from tiktok_archive.models.portability import AppCredentials, RequestStatus, TokenGrant
from tiktok_archive.models.tiktok_quota import QuotaGate

__all__ = [
    "ArchiveStream",
    "AttemptBudget",
    "BudgetedRetry",
    "TikTokClient",
    "build_pool",
]


class TikTokClient:
    """Every TikTok call of the service; each operation gets its own :class:`AttemptBudget`.

    Args:
        base_url: TikTok's API origin, without a trailing slash.
        pool: the container's shared pool (see :func:`build_pool`).
        connect_timeout: seconds to connect.
        read_timeout: longest silence on the socket, waiting for the answer or inside the body.
        max_attempts: requests one operation may make in all, however they fail.
        quota: TikTok's quota shared by every invocation, drawn by every try (None: not budgeted).
    """

    def __init__(
        self,
        base_url: str,
        pool: urllib3.PoolManager,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_attempts: int,
        quota: QuotaGate | None = None,
    ) -> None:
        transport = Transport(base_url, pool, connect_timeout=connect_timeout, read_timeout=read_timeout)
        self.max_attempts = max_attempts
        self.quota = quota
        self._download = DownloadEndpoint(transport)
        self._portability = PortabilityEndpoints(transport)
        self._oauth = OAuthEndpoint(transport)

    def budget(self, deadline: Deadline) -> AttemptBudget:
        """A fresh budget for one operation: ``max_attempts`` requests before ``deadline``, on the quota."""
        return AttemptBudget(self.max_attempts, deadline, self.quota)

    def open_archive(self, request: DownloadRequest, budget: AttemptBudget) -> ArchiveStream:
        """Open the archive's stream; see :meth:`DownloadEndpoint.open`."""
        return self._download.open(request, budget)

    def check_request(self, request: DownloadRequest, deadline: Deadline) -> RequestStatus | None:
        """TikTok's status of the request for its owner; see :meth:`PortabilityEndpoints.check`."""
        return self._portability.check(request, self.budget(deadline))

    def add_request(
        self, access_token: str, data_format: str, categories: list[str], deadline: Deadline
    ) -> int:
        """Add a data request; see :meth:`PortabilityEndpoints.add`."""
        return self._portability.add(access_token, data_format, categories, self.budget(deadline))

    def cancel_request(self, request: DownloadRequest, deadline: Deadline) -> None:
        """Cancel a request; see :meth:`PortabilityEndpoints.cancel`."""
        self._portability.cancel(request, self.budget(deadline))

    def refresh_tokens(self, app: AppCredentials, refresh_token: str, deadline: Deadline) -> TokenGrant:
        """Refresh a user's tokens; see :meth:`OAuthEndpoint.refresh`."""
        return self._oauth.refresh(app, refresh_token, self.budget(deadline))

    def revoke_tokens(self, app: AppCredentials, token: str, deadline: Deadline) -> bool:
        """Revoke the user's authorization; see :meth:`OAuthEndpoint.revoke`."""
        return self._oauth.revoke(app, token, self.budget(deadline))
