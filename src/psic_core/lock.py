r"""The key lock: key derivation, verification and the choice of decoding. Standard library only, no torch.

key --scrypt(salt, N, r, p)--> master (32 bytes) --HKDF-SHA256--> verifier  (label "psic v1 verifier")
                                                              \--> subkeys for other uses, each its own label

The header stores the salt, the scrypt parameters and the verifier; never the key or the master.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import unicodedata
from pathlib import Path

from .conditions import FULL
from .container import Lock, PsicFile
from .errors import PsicFormatError, PsicKeyError

DEFAULT_LOG2_N, DEFAULT_R, DEFAULT_P = 14, 8, 1  # 16 MiB, ~50 ms here
#: bounds a hostile header cannot exceed: at most 256 MiB of scrypt memory and 4 sequential passes
MAX_SCRYPT_MEMORY = 256 << 20
MAX_LOG2_N, MAX_R, MAX_P = 20, 32, 4
SALT_BYTES = 16
VERIFIER_LABEL = b"psic v1 verifier"

Key = str | bytes


def key_bytes(key: Key) -> bytes:
    """The bytes a key stands for; one rule for every source (``str``, ``bytes``, a key file, an environment
    variable, a key provider), so the same text always opens the same file:

    - text is UTF-8 after Unicode NFC normalisation (visually equal text matches);
    - bytes that are UTF-8 text are that text, normalised the same way;
    - other bytes are a binary key, used as they are.
    """
    if isinstance(key, str):
        text = key
    elif isinstance(key, (bytes, bytearray, memoryview)):
        try:
            text = bytes(key).decode("utf-8")
        except UnicodeDecodeError:
            text = None
    else:
        raise TypeError(f"a key is str or bytes, not {type(key).__name__}")
    if text is None:
        raw = bytes(key)
    else:
        try:
            raw = unicodedata.normalize("NFC", text).encode("utf-8")
        except UnicodeEncodeError:
            raise PsicKeyError("the key is not valid Unicode text (pass bytes for binary keys)") from None
    if not raw:
        raise PsicKeyError("the key is empty")
    return raw


def read_key_file(path: str | os.PathLike) -> bytes:
    """The key a key file holds: its bytes less a UTF-8 byte-order mark and one trailing line ending (LF or CRLF),
    which text editors add; ``key_bytes`` then applies as for any key."""
    raw = Path(path).read_bytes()
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    for ending in (b"\r\n", b"\n"):
        if raw.endswith(ending):
            return raw[: -len(ending)]
    return raw


def _check_parameters(lock: Lock):
    if not (1 <= lock.log2_n <= MAX_LOG2_N and 1 <= lock.r <= MAX_R and 1 <= lock.p <= MAX_P):
        raise PsicFormatError(f"scrypt parameters out of bounds (log2 N={lock.log2_n}, r={lock.r}, p={lock.p})")
    if 128 * lock.r * (1 << lock.log2_n) > MAX_SCRYPT_MEMORY:
        raise PsicFormatError("scrypt parameters demand more memory than psic allows")
    if not 8 <= len(lock.salt) <= 64:
        raise PsicFormatError("scrypt salt must be 8 to 64 bytes")


def _master(raw_key: bytes, lock: Lock) -> bytes:
    _check_parameters(lock)
    return hashlib.scrypt(raw_key, salt=lock.salt, n=1 << lock.log2_n, r=lock.r, p=lock.p,
                          maxmem=MAX_SCRYPT_MEMORY + (1 << 20), dklen=32)


def hkdf(master: bytes, label: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869) with an empty salt: one independent subkey per label."""
    prk = hmac.new(b"\0" * 32, master, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + label + bytes([counter]), hashlib.sha256).digest()
        out, counter = out + block, counter + 1
    return out[:length]


def new_lock(key: Key) -> tuple[Lock, bytes]:
    """A fresh lock for ``key`` and its master secret (for deriving further subkeys while encoding)."""
    lock = Lock(salt=os.urandom(SALT_BYTES), verifier=b"", log2_n=DEFAULT_LOG2_N, r=DEFAULT_R, p=DEFAULT_P)
    master = _master(key_bytes(key), lock)
    lock.verifier = hkdf(master, VERIFIER_LABEL)
    return lock, master


def unlock(key: Key, lock: Lock) -> bytes:
    """The master secret if ``key`` opens ``lock``; ``PsicKeyError`` otherwise (constant-time comparison)."""
    candidates = [key_bytes(key)]
    # Until the rule above, bytes keys were used as given: UTF-8 bytes that normalisation changes (decomposed
    # accents, as macOS writes them) must still open the files they locked then.
    if not isinstance(key, str) and bytes(key) != candidates[0]:
        candidates.append(bytes(key))
    for raw_key in candidates:
        master = _master(raw_key, lock)
        if hmac.compare_digest(hkdf(master, VERIFIER_LABEL), lock.verifier):
            return master
    raise PsicKeyError("wrong key for this file")


def access(f: PsicFile, key: Key | None, full: bool | None) -> tuple[str, bytes | None]:
    """Which decoding a request gets, and the master secret when a key was checked: the one place that reads the
    header, checks the key and picks.

    - ``full=None``: the full decoding when a key is given, the file's default (protected) otherwise;
    - ``full=True``: the full decoding; a locked file needs the right key;
    - ``full=False``: the protected decoding (a given key is still checked, so a wrong key never passes silently).

    A file encoded without a key has an open full decoding; any key is then ignored (there is nothing to check).
    """
    want_full = full if full is not None else key is not None
    master = None
    if f.lock is not None and key is not None:
        master = unlock(key, f.lock)
    elif want_full and f.lock is not None:
        raise PsicKeyError("this file is locked: its full decoding needs the key")
    return (FULL if want_full else f.header.default_condition), master


def condition_for(f: PsicFile, key: Key | None, full: bool | None) -> str:
    """The decoding a request gets (see ``access``)."""
    return access(f, key, full)[0]
