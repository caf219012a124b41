"""What TikTok says about a portability request and a user's tokens, independent of HTTP.

Facts from TikTok's documentation (``shared/reference/tiktok-portability-api.md``): a request is
``pending`` while TikTok prepares it, ``downloading`` once ready (for four days), then ``expired``;
``cancelled`` once cancelled. ``request_id`` is an int64. Access tokens live 2 hours (24 h on older
pages), refresh tokens 180 days (365 on older pages) and rotate on every refresh.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

DATA_FORMATS = ("json", "text")
CATEGORIES = ("all_data", "video", "profile", "activity", "direct_message")


class TikTokStatus(StrEnum):
    """A request's status at TikTok (Check Status)."""

    PENDING = "pending"
    DOWNLOADING = "downloading"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class RequestStatus:
    """TikTok's answer to Check Status for a request its caller owns.

    Attributes:
        request_id: the id TikTok answered about (compared with the one asked before this is made).
        status: TikTok's status; an unknown value is kept as text.
        apply_time: when the request was added (Unix seconds), if TikTok said.
        collect_time: when the data was collected (Unix seconds), if TikTok said and it is not 0.
        data_format: ``json`` or ``text``, if TikTok said.
        categories: TikTok's ``category_selection_list``, if it said.
    """

    request_id: int
    status: str
    apply_time: int | None = None
    collect_time: int | None = None
    data_format: str | None = None
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class TokenGrant:
    """What a successful OAuth refresh answers: a new access token and a new (rotated) refresh token.

    ``repr`` shows no token.
    """

    access_token: str = field(repr=False)
    expires_in: int
    refresh_token: str = field(repr=False)
    refresh_expires_in: int
    open_id: str | None
    scope: str | None


@dataclass(frozen=True)
class AppCredentials:
    """The app's ``client_key`` and ``client_secret`` (from the Secrets Manager secret).

    ``repr`` hides the secret.
    """

    client_key: str
    client_secret: str = field(repr=False)
