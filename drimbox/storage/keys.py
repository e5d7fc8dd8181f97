"""Opaque blob keys: generation, validation and the on-disk fan-out layout.

A blob key is 128 random bits written as 32 lower-case hexadecimal digits. It is chosen by the
store, never by the caller, and never derived from a UID or any received string (DESIGN §4). Every
adapter validates every key it is given against :data:`KEY_PATTERN` before using it, so a crafted
key (``"../x"``, an absolute path, a SOP Instance UID) can never name anything outside the store.
"""

from __future__ import annotations

import re
import secrets

from drimbox.errors import BlobNotFoundError

__all__ = [
    "FAN_OUT_DEPTH",
    "FAN_OUT_WIDTH",
    "KEY_BYTES",
    "KEY_PATTERN",
    "fan_out",
    "is_valid_key",
    "new_key",
    "validate_key",
]

KEY_BYTES = 16
"""Random bytes per key: 128 bits, so two keys never collide in practice."""

KEY_PATTERN = re.compile(rf"[0-9a-f]{{{2 * KEY_BYTES}}}")
"""The only form a key may take (checked with ``fullmatch``)."""

FAN_OUT_WIDTH = 2
"""Hex digits per fan-out directory level: 256 entries per directory."""

FAN_OUT_DEPTH = 1
"""Directory levels above each blob. One level of 256 directories, all created when the store
opens: a put then never creates a directory (each new directory costs two more syncs), and
ext4/XFS hashed directories keep lookups fast with tens of thousands of entries each."""


def new_key() -> str:
    """Return a fresh opaque key from the operating system's random source."""
    return secrets.token_hex(KEY_BYTES)


def is_valid_key(key: object) -> bool:
    """Tell whether ``key`` has exactly the form of a key made by :func:`new_key`."""
    return isinstance(key, str) and KEY_PATTERN.fullmatch(key) is not None


def validate_key(key: object) -> str:
    """Return ``key`` unchanged if it is a well-formed key.

    Raises
    ------
    BlobNotFoundError
        When ``key`` is not of the store's own form: no store can hold it, and it is never used
        to build a path or an object name. The message does not echo the key (it may be a UID).
    """
    if not is_valid_key(key):
        raise BlobNotFoundError(
            f"not a blob key of this store (expected {2 * KEY_BYTES} lower-case hex digits)"
        )
    assert isinstance(key, str)
    return key


def fan_out(key: str) -> tuple[str, ...]:
    """Return the relative path components of a blob: ``("ab", "abcd...")``.

    Parameters
    ----------
    key
        A key; validated here too, so a caller cannot bypass the check.
    """
    valid = validate_key(key)
    levels = tuple(
        valid[level * FAN_OUT_WIDTH : (level + 1) * FAN_OUT_WIDTH] for level in range(FAN_OUT_DEPTH)
    )
    return (*levels, valid)
