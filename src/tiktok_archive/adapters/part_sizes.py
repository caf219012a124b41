"""How large each part of a multipart upload is, when the archive's size is unknown until its end.

S3 allows at most 10,000 parts of 5 MiB to 5 GiB each. A fixed part size caps the object at
10,000 × part size (78 GiB with 8 MiB parts) — too small for a portability archive of any size, while a
large fixed part size costs memory on every download. The schedule keeps the configured size for the
first :data:`STEADY_PARTS` parts, so memory stays flat for every archive a Lambda invocation can move,
then doubles it every :data:`GROWTH_INTERVAL` parts, capped at S3's 5 GiB. From 5 MiB that fits 8.8 TiB
in 10,000 parts; from the default 8 MiB, 11.4 TiB. Both exceed S3's long-standing 5 TiB object limit.
(S3 now documents 48.8 TiB, which is exactly 10,000 parts of 5 GiB: only an upload whose every part
is 5 GiB reaches it, so no schedule that starts small can.)
"""

from __future__ import annotations

MIB = 1024 * 1024
MIN_PART_BYTES = 5 * MIB
MAX_PART_BYTES = 5 * 1024 * MIB
MAX_PARTS = 10_000
STEADY_PARTS = 1_000
GROWTH_INTERVAL = 900  # 1,000 + 10 × 900 = 10,000: ten doublings, 5 MiB × 2^10 = 5 GiB


def part_size(part_number: int, base: int) -> int:
    """Bytes of part ``part_number`` (1-based) for an upload whose parts start at ``base`` bytes.

    Raises:
        ValueError: ``part_number`` is outside 1..10,000 or ``base`` outside S3's part sizes.
    """
    if not 1 <= part_number <= MAX_PARTS:
        raise ValueError(f"S3 part numbers run from 1 to {MAX_PARTS}, not {part_number}")
    if not MIN_PART_BYTES <= base <= MAX_PART_BYTES:
        raise ValueError(f"a part holds 5 MiB to 5 GiB, not {base} bytes")
    if part_number <= STEADY_PARTS:
        return base
    doublings = (part_number - STEADY_PARTS - 1) // GROWTH_INTERVAL + 1
    return min(MAX_PART_BYTES, base << doublings)


def largest_object(base: int) -> int:
    """The most bytes 10,000 parts hold on the schedule starting at ``base``."""
    steady = STEADY_PARTS * base
    grown = sum(
        GROWTH_INTERVAL * min(MAX_PART_BYTES, base << doublings)
        for doublings in range(1, (MAX_PARTS - STEADY_PARTS) // GROWTH_INTERVAL + 1)
    )
    return steady + grown
