"""What TikTok says about a portability request and a user's tokens, independent of HTTP.

Facts from TikTok's documentation (``shared/reference/tiktok-portability-api.md``): a request is
``pending`` while TikTok prepares it, ``downloading`` once ready (for four days), then ``expired``;
``cancelled`` once cancelled. ``request_id`` is an int64. Access tokens live 2 hours (24 h on older
pages), refresh tokens 180 days (365 on older pages) and rotate on every refresh.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tiktok_archive.models.errors import InvalidRequestError
from tiktok_archive.models.inputs import MAX_TOKEN_LENGTH, is_token_shaped, parse_access_token

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


@dataclass(frozen=True)
class HandedTokens:
    """A user's tokens as a backend hands them over in a JSON body (``POST /requests``, ``/downloads``).

    ``open_id`` is the caller's word, only ever compared with the one TikTok's refresh answer names.
    ``repr`` hides both tokens.
    """

    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    open_id: str | None = None


@dataclass(frozen=True)
class NewRequest:
    """What ``POST /requests`` asks for: TikTok's Add Data Request, with the user's tokens."""

    tokens: HandedTokens
    data_format: str = "json"
    categories: tuple[str, ...] = ("all_data",)


HANDOVER_FIELDS = frozenset({"access_token", "refresh_token", "open_id"})
_NEW_REQUEST_FIELDS = HANDOVER_FIELDS | {"data_format", "categories"}
MAX_OPEN_ID_LENGTH = 256
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}")


def is_open_id(value: object) -> bool:
    """Whether ``value`` can be a TikTok ``open_id``: 1 to :data:`MAX_OPEN_ID_LENGTH` visible ASCII."""
    return isinstance(value, str) and is_token_shaped(value) and len(value) <= MAX_OPEN_ID_LENGTH


def parse_open_id(value: object) -> str:
    """A path's ``open_id``.

    Raises:
        InvalidRequestError: not 1 to 256 visible ASCII characters.
    """
    if not is_open_id(value):
        raise InvalidRequestError(f"open_id must be 1 to {MAX_OPEN_ID_LENGTH} visible ASCII characters")
    return str(value)


def refuse_unknown_fields(document: dict[str, Any], known: frozenset[str]) -> None:
    """Raise :class:`InvalidRequestError` naming the fields of ``document`` that are not ``known``.

    Only names that look like field names are echoed: a token put where a name goes (``{"rft.…": …}``)
    must not come back in an answer a backend logs.
    """
    unknown = sorted(set(document) - known)
    if unknown:
        named = [name for name in unknown if _FIELD_NAME.fullmatch(name)]
        others = len(unknown) - len(named)
        listed = ", ".join(named)[:200] + (f"{', ' if named else ''}{others} more" if others else "")
        raise InvalidRequestError(f"unknown field(s): {listed}")


def parse_handed_tokens(document: dict[str, Any]) -> HandedTokens:
    """The ``access_token``, ``refresh_token`` and ``open_id`` of a body (other fields are not looked at).

    ``access_token`` (required) and ``refresh_token``: tokens as TikTok issues them (1–2,048 visible
    ASCII characters). ``open_id``: only with a ``refresh_token`` — TikTok's refresh answer is what
    names the user, and the caller's ``open_id`` is checked against it.

    Raises:
        MissingTokenError: no well-formed ``access_token``.
        InvalidRequestError: a malformed ``refresh_token`` or ``open_id``, or an ``open_id`` alone.
    """
    access_token = parse_access_token(document.get("access_token"))
    refresh_token = document.get("refresh_token")
    if refresh_token is not None and (
        not isinstance(refresh_token, str) or not is_token_shaped(refresh_token)
    ):
        raise InvalidRequestError(f"refresh_token must be 1 to {MAX_TOKEN_LENGTH:,} visible ASCII characters")
    open_id = document.get("open_id")
    if open_id is not None:
        open_id = parse_open_id(open_id)
        if refresh_token is None:
            raise InvalidRequestError(
                "open_id is confirmed by TikTok's answer to a refresh: give it with the refresh_token, "
                "or leave it out"
            )
    return HandedTokens(access_token, refresh_token, open_id)


def parse_new_request(document: dict[str, Any]) -> NewRequest:
    """Validate a ``POST /requests`` body.

    The tokens as :func:`parse_handed_tokens` reads them. ``data_format``: ``json`` (default) or
    ``text``. ``categories``: a non-empty list of TikTok's categories without repeats, default
    ``["all_data"]``; ``all_data`` overrides the rest, as TikTok documents.

    Raises:
        InvalidRequestError: an unknown field, or a field out of its range (the message names it).
        MissingTokenError: no well-formed ``access_token``.
    """
    refuse_unknown_fields(document, _NEW_REQUEST_FIELDS)
    data_format = document.get("data_format", "json")
    if data_format not in DATA_FORMATS:
        raise InvalidRequestError(f"data_format must be one of {', '.join(DATA_FORMATS)}")
    categories = document.get("categories", ["all_data"])
    if (
        not isinstance(categories, list)
        or not categories
        or any(not isinstance(c, str) or c not in CATEGORIES for c in categories)
        or len(set(categories)) != len(categories)
    ):
        raise InvalidRequestError(
            f"categories must be a non-empty list of distinct values among {', '.join(CATEGORIES)}"
        )
    if "all_data" in categories:
        categories = ["all_data"]
    return NewRequest(parse_handed_tokens(document), data_format, tuple(categories))
