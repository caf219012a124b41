"""Combining CRC32s of consecutive pieces gives the CRC32 of the whole."""

from __future__ import annotations

import os
import zlib

import pytest

from tiktok_archive.adapters.crc32 import crc32_combine


@pytest.mark.parametrize(("length_a", "length_b"), [(0, 0), (0, 5), (5, 0), (1, 1), (3, 1000), (4096, 8191)])
def test_combined_crc_is_the_crc_of_the_concatenation(length_a: int, length_b: int) -> None:
    a, b = os.urandom(length_a), os.urandom(length_b)
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_parts_of_an_upload_combine_into_the_whole_objects_crc() -> None:
    parts = [os.urandom(5 * 1024 * 1024) for _ in range(3)] + [os.urandom(12_345)]
    crc = 0
    for part in parts:
        crc = crc32_combine(crc, zlib.crc32(part), len(part))
    assert crc == zlib.crc32(b"".join(parts))
