"""One exception hierarchy for psic. Every documented failure raises a subclass of ``PsicError``."""


class PsicError(Exception):
    """Base class of every psic error."""


class PsicFormatError(PsicError, ValueError):
    """The data is not a valid .psic file (bad signature, CRC, truncation, unsupported version, limits)."""


class PsicKeyError(PsicError):
    """The key is wrong, empty or required (full decoding of a locked file without a key)."""


class PsicModelError(PsicError, LookupError):
    """The weights a file needs are not available, or a weights file is invalid."""


class PsicIntegrityError(PsicFormatError):
    """The data passed its CRCs but not its content checks: the decoded latent does not match the digest stored in
    the file (corrupt data, or an entropy decoder that desynchronised), or sealed metadata fails authentication.

    A format error too, so code that handles invalid files handles these without knowing the difference.
    """
