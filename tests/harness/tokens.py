"""TikTok-shaped tokens for tests, the emulator, the demo and the sample events.

TikTok publishes no token grammar (see ``shared/reference/tiktok-portability-api.md``). What it hands out
and shows in its own examples looks like:

- ``act.`` + 60–100 characters of letters, digits, ``_`` and ``-``, then ``!`` + four digits + ``.e1``
  (also ``.va`` and ``.e2``: the check-status page's ``act.testTemp123testtemo123!5328.e2``);
- ``act.3.`` + a long base64url string (one public example);
- refresh tokens the same with ``rft.``.

Every generated token is random, so a test can tell its token from any other in the output it reads.
"""

from __future__ import annotations

import random
import secrets
import string

BASE64URL = string.ascii_letters + string.digits + "-_"
ALPHANUMERIC_DASH = string.ascii_letters + string.digits + "_-"
SUFFIXES = (".e1", ".va", ".e2")
# TikTok's own example from the Check Status page, verbatim.
CHECK_STATUS_EXAMPLE = "act.testTemp123testtemo123!5328.e2"
# The sample events' user (events/*.json) and `make demo`'s: fixed, so the samples can name them.
DEMO_TOKEN = "act.DEMO7hQ2xK9pLm4Rt8Vw3Yz6Bc1Nf5Gj0Sd-Ua_Ei2Ok7Ph4Tl9Xm3Qr8Wv6Zy1Cb5Dg0Fn-Jp!4667.e1"
DEMO_REFRESH_TOKEN = "rft.DEMOr9Kq2Lx7Vn4Tb8Wm3Zc6Hd1Pf5Gs0Ja-Ue_Yi2Oo7Rh4Sl9Nk3Xe8Qv6Bt1Cy5Dw0Fm-Jg!4667.e1"
DEMO_OPEN_ID = "-000DEMO0a1b2c3d4e5f60718293a4b5c6d"


def tiktok_token(kind: str = "act", *, shape: str | None = None, rng: random.Random | None = None) -> str:
    """A fresh token of ``kind`` (``act`` or ``rft``) in one of TikTok's shapes.

    ``shape`` is ``"bang"`` (``act.XXXX!1234.e1``, ``.va`` or ``.e2``) or ``"dot3"`` (``act.3.`` +
    base64url); random when not given.
    """
    pick = rng or random.SystemRandom()
    shape = shape or pick.choice(("bang", "bang", "bang", "dot3"))
    if shape == "dot3":
        body = "".join(pick.choice(BASE64URL) for _ in range(pick.randint(100, 180)))
        return f"{kind}.3.{body}"
    body = "".join(pick.choice(ALPHANUMERIC_DASH) for _ in range(pick.randint(60, 100)))
    return f"{kind}.{body}!{pick.randint(1000, 9999)}{pick.choice(SUFFIXES)}"


def access_token(shape: str | None = None) -> str:
    """A TikTok-shaped user access token (``act.…``)."""
    return tiktok_token("act", shape=shape)


def refresh_token(shape: str | None = None) -> str:
    """A TikTok-shaped refresh token (``rft.…``)."""
    return tiktok_token("rft", shape=shape)


def open_id() -> str:
    """A TikTok-shaped ``open_id`` (an opaque id of the user for one app)."""
    return "-000" + secrets.token_hex(16)


def new_request_id() -> int:
    """A TikTok-shaped ``request_id``: a random positive int64 beyond 2^53 (double rounding would show)."""
    return secrets.randbelow(2**63 - 2**60) + 2**60
