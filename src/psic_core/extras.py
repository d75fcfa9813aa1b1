"""Optional dependency sets (pyproject.toml's extras) and the one-line error when a command needs a missing one.

Encoding, decoding and the image-library plugins need only the core dependencies; training and evaluation also
need the target VLP's stack (open_clip, with timm and huggingface_hub under it), which is far larger.
"""

from __future__ import annotations

import importlib

from .errors import PsicError

#: extra -> {distribution in pyproject.toml: the module psic imports from it}
EXTRAS: dict[str, dict[str, str]] = {
    "train": {"open_clip_torch": "open_clip"},
    "eval": {"open_clip_torch": "open_clip", "matplotlib": "matplotlib", "scipy": "scipy"},
}


class MissingExtraError(PsicError, ImportError):
    """A command needs an optional dependency set that is not installed (the message names the pip command)."""


def require(extra: str, purpose: str) -> None:
    """Import the modules of ``extra``, or raise MissingExtraError naming ``pip install 'psic[extra]'``.

    Importing rather than looking the module up also catches an installed package whose own dependencies are not.
    """
    for module in EXTRAS[extra].values():
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise MissingExtraError(
                f"{purpose} needs the {extra!r} extra ({exc.name or module} is not installed): "
                f"pip install 'psic[{extra}]'"
            ) from None
