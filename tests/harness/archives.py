"""Realistic, generated TikTok portability archives (never committed).

An archive holds a ``user_data_tiktok.json`` export shaped like TikTok's (profile, activity, comments,
direct messages, posts as links) and stored "media-sized" entries that bring it to the size asked for.
The same ``(request_id, size)`` always gives the same bytes.
"""

from __future__ import annotations

import io
import json
import random
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MEDIA_ENTRY_BYTES = 4 * 1024 * 1024
EXPORT_NAME = "user_data_tiktok.json"


@dataclass(frozen=True)
class Archive:
    """One generated archive and the facts tests compare against."""

    data: bytes
    entries: tuple[str, ...]


def build_archive(request_id: int, size: int) -> Archive:
    """A zip of about ``size`` bytes (at least the JSON export) for ``request_id``."""
    rng = random.Random(request_id * 1_000_003 + size)
    export = json.dumps(_user_data(rng, request_id), indent=2).encode()
    buffer = io.BytesIO()
    names = [EXPORT_NAME]
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(EXPORT_NAME, export, compress_type=zipfile.ZIP_DEFLATED)
        remaining = size - buffer.tell() - 200
        index = 0
        while remaining > 0:
            index += 1
            length = min(MEDIA_ENTRY_BYTES, remaining)
            name = f"Posts/Media/video_{index:05d}.mp4"
            archive.writestr(name, rng.randbytes(length), compress_type=zipfile.ZIP_STORED)
            names.append(name)
            remaining -= length + 100  # local header, central directory entry, name
    return Archive(buffer.getvalue(), tuple(names))


def _user_data(rng: random.Random, request_id: int) -> dict[str, object]:
    start = datetime(2025, 1, 1, tzinfo=UTC)

    def when(i: int) -> str:
        return (start + timedelta(minutes=37 * i)).strftime("%Y-%m-%d %H:%M:%S")

    def video_link() -> str:
        return f"https://www.tiktokv.com/share/video/{rng.randrange(10**18, 10**19)}/"

    return {
        "Profile": {
            "Profile Info": {
                "ProfileMap": {
                    "userName": f"user{request_id % 100000}",
                    "bioDescription": "Exported with the Data Portability API",
                    "birthDate": "01-Jan-1990",
                    "likesReceived": str(rng.randrange(10_000)),
                }
            }
        },
        "Activity": {
            "Video Browsing History": {
                "VideoList": [{"Date": when(i), "Link": video_link()} for i in range(200)]
            },
            "Like List": {"ItemFavoriteList": [{"Date": when(i), "Link": video_link()} for i in range(80)]},
            "Search History": {
                "SearchList": [{"Date": when(i), "SearchTerm": f"term {i}"} for i in range(40)]
            },
        },
        "Comment": {
            "Comments": {"CommentsList": [{"Date": when(i), "Comment": f"nice {i}"} for i in range(30)]}
        },
        "Direct Messages": {
            "Chat History": {
                "ChatHistory": {
                    "Chat History with friend1:": [
                        {"Date": when(i), "From": "friend1", "Content": f"hello {i}"} for i in range(25)
                    ]
                }
            }
        },
        "Video": {
            "Videos": {
                "VideoList": [
                    {"Date": when(i), "Link": video_link(), "Likes": str(rng.randrange(500))}
                    for i in range(12)
                ]
            }
        },
    }
