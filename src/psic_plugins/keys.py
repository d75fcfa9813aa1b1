"""Which key an image-library read uses: an explicit key, an ``unlocked()`` block, or a key provider.

Image libraries give a format plugin no way to receive a key (``Image.open(path)`` takes none), so a read looks,
in order, at: the key passed to it (``im.unlock(key)``, ``iio.imread(..., key=...)``), the innermost
``unlocked(key)`` block of the current thread or asyncio task, and - for locked files only - the
``psic_key_for`` hook. With none of them the file decodes to its protected image.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

from psic_core.lock import Key, key_bytes

from .hookspecs import hookimpl

# a ContextVar, not a global: each thread and each asyncio task sees only the blocks it entered itself
_unlocked_key: ContextVar[Key | None] = ContextVar("psic_unlocked_key", default=None)


@contextmanager
def unlocked(key: Key) -> Iterator[None]:
    """Use ``key`` for the .psic files opened or read inside this block, in this thread or asyncio task.

    A Pillow image opened inside the block keeps the key for a ``load()`` that happens after the block. New threads
    start without the block's key (``contextvars.copy_context().run`` carries it over explicitly).
    """
    key_bytes(key)  # an empty or non-text key fails here, not at some later load
    token = _unlocked_key.set(key)
    try:
        yield
    finally:
        _unlocked_key.reset(token)


def active_key() -> Key | None:
    """The key of the innermost ``unlocked()`` block, if any."""
    return _unlocked_key.get()


def key_for(info: dict, key: Key | None = None, *, providers: bool = True) -> Key | None:
    """The key a read of the file described by ``info`` uses (see the module docstring for the order)."""
    if key is None:
        key = _unlocked_key.get()
    if key is None and providers and info["locked"]:
        from . import pm  # the manager lives in the package, which imports this module

        key = pm.hook.psic_key_for(info=info)
    return key


class EnvironmentKey:
    """A key provider serving the key in an environment variable (default ``PSIC_KEY``) for locked files.

    Not registered by default: the environment reaches every process and child process, so a variable set for the
    CLI would silently turn every protected read of every program into a full one. Register it where that is
    intended: ``psic_plugins.pm.register(EnvironmentKey(), name="psic.env-key")``. Other providers answer first.
    """

    def __init__(self, variable: str = "PSIC_KEY"):
        self.variable = variable

    @hookimpl(trylast=True)
    def psic_key_for(self) -> str | None:  # pluggy passes only the arguments an implementation names
        return os.environ.get(self.variable) or None
