"""psic: privacy-shielded image compression.

One ``.psic`` bitstream, two decodings: the default *protected* image looks right to people while CLIP-like models
misread it; the *full* image (with the key, when the file is locked) is the faithful reconstruction.

    import psic_core
    data = psic_core.encode("photo.jpg", key="secret")
    protected = psic_core.decode(data)             # PIL image, shielded
    full = psic_core.decode(data, key="secret")    # PIL image, faithful
    psic_core.info(data)                           # header fields, no model load
"""

from .codec import decode, encode, info
from .errors import PsicError, PsicFormatError, PsicIntegrityError, PsicKeyError, PsicModelError

__version__ = "0.1.0"

__all__ = [
    "PsicError",
    "PsicFormatError",
    "PsicIntegrityError",
    "PsicKeyError",
    "PsicModelError",
    "decode",
    "encode",
    "info",
]
