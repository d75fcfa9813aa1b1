"""Photo metadata: what stays public, what is sealed under the key, and the sealing itself. No torch.

Public (readable without the key): the ICC profile and the EXIF orientation (as a minimal EXIF block), so the
default view shows the photo upright with the right colours. Everything else — the full EXIF (GPS, capture time,
camera and serial numbers, owner), XMP and IPTC — is **sealed**: serialised, then encrypted and authenticated with
AES-256-GCM under ``HKDF(master, "psic v1 metadata key")``, a fresh random 96-bit nonce per file, and the HEAD and
LOCK chunk data as associated data (so the sealed chunk cannot be moved to another file or header undetected).
Without a key the sensitive metadata is dropped, unless the caller explicitly keeps it in the clear.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, fields

from PIL import Image

from .errors import PsicFormatError, PsicIntegrityError

ORIENTATION_TAG = 0x0112
METADATA_KEY_LABEL = b"psic v1 metadata key"
SEAL_VERSION = 1
NONCE_BYTES = 12
_FIELD_TAGS = {"exif": b"EXIF", "xmp": b"XMP ", "iptc": b"IPTC"}


@dataclass
class PrivateMetadata:
    """The sensitive metadata of a photo, as raw bytes exactly as the input carried them."""

    exif: bytes | None = None
    xmp: bytes | None = None
    iptc: bytes | None = None

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def to_bytes(self) -> bytes:
        out = b""
        for name, tag in _FIELD_TAGS.items():
            value = getattr(self, name)
            if value:
                out += tag + struct.pack(">I", len(value)) + value
        return out

    @classmethod
    def from_bytes(cls, data: bytes) -> "PrivateMetadata":
        result, pos, names = cls(), 0, {tag: name for name, tag in _FIELD_TAGS.items()}
        while pos < len(data):
            if pos + 8 > len(data):
                raise PsicFormatError("metadata record truncated")
            tag, (length,) = data[pos : pos + 4], struct.unpack(">I", data[pos + 4 : pos + 8])
            if tag not in names or pos + 8 + length > len(data) or getattr(result, names[tag]) is not None:
                raise PsicFormatError("malformed metadata record")
            setattr(result, names[tag], data[pos + 8 : pos + 8 + length])
            pos += 8 + length
        return result

    def summary(self) -> dict:
        """What a person unlocking the file wants to know: which sensitive fields are present."""
        out = {"exif_bytes": len(self.exif or b""), "xmp_bytes": len(self.xmp or b""),
               "iptc_bytes": len(self.iptc or b"")}
        exif = _parse_exif(self.exif) if self.exif else None
        if self.exif and exif is None:
            out["exif"] = "unreadable"
        elif exif is not None:
            base = dict(exif)
            try:
                ifd, gps = exif.get_ifd(0x8769), exif.get_ifd(0x8825)
            except (SyntaxError, ValueError, TypeError, KeyError, IndexError, struct.error, OSError):
                ifd, gps = {}, {}
            out["gps"] = bool(gps)
            out["camera"] = " ".join(str(base[t]).strip("\0 ") for t in (0x010F, 0x0110) if t in base) or None
            out["serial_number"] = ifd.get(0xA431)
            out["time"] = ifd.get(0x9003) or base.get(0x0132)
        return out


def _parse_exif(exif_bytes: bytes) -> Image.Exif | None:
    """Pillow's EXIF view of ``exif_bytes``, or None when they are unreadable (EXIF from files is untrusted)."""
    exif = Image.Exif()
    try:
        exif.load(exif_bytes)
        dict(exif)  # Pillow parses lazily: force it here
    except (SyntaxError, ValueError, TypeError, KeyError, IndexError, struct.error, OSError):
        return None
    return exif


def _applist_iptc(im: Image.Image) -> bytes | None:
    for marker, content in getattr(im, "applist", []):
        if marker == "APP13" and content.startswith(b"Photoshop 3.0"):
            return content
    return None


def extract(im: Image.Image) -> tuple[bytes | None, PrivateMetadata]:
    """(ICC profile, sensitive metadata) of an opened Pillow image."""
    xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    return im.info.get("icc_profile") or None, PrivateMetadata(im.info.get("exif") or None, xmp or None,
                                                               _applist_iptc(im))


def orientation_exif(exif_bytes: bytes | None) -> bytes | None:
    """A minimal EXIF block holding only the orientation tag (None when absent or already upright)."""
    if not exif_bytes:
        return None
    source = _parse_exif(exif_bytes)
    orientation = source.get(ORIENTATION_TAG) if source is not None else None
    # only the 8 defined values; anything else (a hostile string or tuple) is not worth keeping, nor safe to write
    if not isinstance(orientation, int) or not 2 <= orientation <= 8:
        return None
    public = Image.Exif()
    public[ORIENTATION_TAG] = orientation
    return public.tobytes()


def seal(private: PrivateMetadata, master: bytes, associated_data: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from .lock import hkdf

    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(hkdf(master, METADATA_KEY_LABEL)).encrypt(nonce, private.to_bytes(), associated_data)
    return bytes([SEAL_VERSION]) + nonce + sealed


def unseal(data: bytes, master: bytes, associated_data: bytes) -> PrivateMetadata:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from .lock import hkdf

    if len(data) < 1 + NONCE_BYTES + 16 or data[0] != SEAL_VERSION:
        raise PsicFormatError("sEAL chunk is malformed or of an unknown version")
    try:
        plain = AESGCM(hkdf(master, METADATA_KEY_LABEL)).decrypt(data[1 : 1 + NONCE_BYTES], data[1 + NONCE_BYTES :],
                                                                 associated_data)
    except InvalidTag:
        raise PsicIntegrityError("sealed metadata failed authentication (the file or its header was altered)") from None
    return PrivateMetadata.from_bytes(plain)
