"""CRC32 as S3 uses it: base64 encoding, and combining the CRCs of consecutive pieces.

Each part's CRC32 is computed once, from the part's buffer, and given to S3 with the part (so botocore
does not compute it a second time); the whole object's CRC32 is then combined from the parts' CRCs,
never computed over the bytes again. Combining appends ``len(b)`` zero bytes to ``crc(a)`` with a
32×32 matrix over GF(2) (zlib's ``crc32_combine``); the matrix depends only on the length, so it is
built once per part size and then costs 32 shifts and XORs per part.
"""

from __future__ import annotations

import base64
import functools

_POLYNOMIAL = 0xEDB88320  # CRC-32 (IEEE), reflected
_DIMENSION = 32


def crc32_base64(crc: int) -> str:
    """Encode a CRC32 the way S3 reports ``x-amz-checksum-crc32``: base64 of its 4 big-endian bytes."""
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


def crc32_combine(crc_a: int, crc_b: int, length_b: int) -> int:
    """``zlib.crc32(a + b)`` from ``crc_a = zlib.crc32(a)``, ``crc_b = zlib.crc32(b)`` and ``len(b)``."""
    if length_b == 0:
        return crc_a
    return _apply(_zeros_operator(length_b), crc_a) ^ crc_b


def _apply(matrix: tuple[int, ...], vector: int) -> int:
    total = 0
    row = 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


def _square(matrix: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(_apply(matrix, column) for column in matrix)


@functools.lru_cache(maxsize=16)
def _zeros_operator(length: int) -> tuple[int, ...]:
    """The operator that feeds ``length`` zero bytes through a CRC32 register."""
    one_bit = (_POLYNOMIAL, *(1 << n for n in range(_DIMENSION - 1)))
    power = _square(_square(_square(one_bit)))  # one zero byte: 8 zero bits
    result = tuple(1 << n for n in range(_DIMENSION))  # identity
    while length:
        if length & 1:
            result = tuple(_apply(power, column) for column in result)
        length >>= 1
        if length:
            power = _square(power)
    return result
