"""The part-size schedule: flat for ordinary archives, growing so that 10,000 parts hold any archive."""

from __future__ import annotations

import pytest

from tiktok_archive.adapters.part_sizes import (
    MAX_PART_BYTES,
    MAX_PARTS,
    MIB,
    MIN_PART_BYTES,
    largest_object,
    part_size,
)

TIB = 1024**4
S3_CLASSIC_OBJECT_LIMIT = 5 * TIB


@pytest.mark.parametrize(
    ("part_number", "expected"),
    [
        (1, 8 * MIB),
        (1000, 8 * MIB),  # the last part of the steady stretch
        (1001, 16 * MIB),  # the first doubling
        (1900, 16 * MIB),
        (1901, 32 * MIB),
        (8200, 2048 * MIB),
        (8201, 4096 * MIB),
        (9100, 4096 * MIB),
        (9101, MAX_PART_BYTES),  # 8 GiB would be past S3's maximum: capped
        (10_000, MAX_PART_BYTES),
    ],
)
def test_schedule_boundaries_from_8_mib(part_number: int, expected: int) -> None:
    assert part_size(part_number, 8 * MIB) == expected


def test_from_the_smallest_part_the_last_part_is_exactly_the_largest_allowed() -> None:
    assert part_size(9100, MIN_PART_BYTES) == 2560 * MIB
    assert part_size(9101, MIN_PART_BYTES) == MAX_PART_BYTES
    assert part_size(MAX_PARTS, MIN_PART_BYTES) == MAX_PART_BYTES


@pytest.mark.parametrize("base_mib", [5, 6, 8, 16, 64, 100, 1024, 5120])
def test_every_part_is_a_legal_size_and_10000_parts_hold_more_than_5_tib(base_mib: int) -> None:
    base = base_mib * MIB
    sizes = [part_size(n, base) for n in range(1, MAX_PARTS + 1)]
    assert all(MIN_PART_BYTES <= size <= MAX_PART_BYTES for size in sizes)
    assert sizes == sorted(sizes)  # never shrinks
    assert sum(sizes) == largest_object(base) > S3_CLASSIC_OBJECT_LIMIT


def test_memory_stays_flat_for_the_first_1000_parts() -> None:
    # 7.8 GiB at 8 MiB parts: every archive below that is uploaded with the configured part size.
    assert {part_size(n, 8 * MIB) for n in range(1, 1001)} == {8 * MIB}
    assert largest_object(5 * MIB) // TIB == 8
    assert largest_object(8 * MIB) // TIB == 11


@pytest.mark.parametrize(("part_number", "base"), [(0, 8 * MIB), (10_001, 8 * MIB), (1, 4 * MIB)])
def test_outside_s3s_limits_is_refused(part_number: int, base: int) -> None:
    with pytest.raises(ValueError, match=r"S3 part numbers|5 MiB to 5 GiB"):
        part_size(part_number, base)
