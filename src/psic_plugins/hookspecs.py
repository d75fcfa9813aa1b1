"""The hooks a psic plugin can implement (pluggy project name ``psic``, entry-point group ``psic``).

A plugin is any module or object with functions marked ``@psic_plugins.hookimpl`` and named after a hook below;
a function may accept a subset of the hook's arguments. The ``register_*`` hooks are *historic*: a plugin
registered late (``psic_plugins.pm.register(plugin)`` after start-up) is still called with the same ``register``.
Plugin modules are imported when ``psic_plugins`` is, so import torch and other heavy modules inside the hook
functions, not at module level.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("psic")
hookimpl = pluggy.HookimplMarker("psic")


@hookspec(historic=True)
def register_image_libraries(register):
    """Integrate psic with an image library: call ``register(name, install)``.

    ``install()`` is called at once and must be idempotent (registering twice changes nothing). The built-in
    Pillow and imageio integrations use this hook. Called when ``psic_plugins`` is imported.
    """


@hookspec(historic=True)
def register_backbones(register):
    """Add codec architectures: call ``register(name, cls)`` with a ``psic_core.models.ConditionalCodec`` class.

    Called before the first encode or decode that goes through the plugins (``psic_plugins.load_codec_plugins``),
    so the function may import torch.
    """


@hookspec(historic=True)
def register_weights(register):
    """Add weights files: call ``register(path)`` for each psic ``.safetensors`` file.

    ``register`` is ``psic_core.weights.registry.register`` (it returns the file's ``WeightsInfo``). Called with
    ``register_backbones``, before the first encode or decode that goes through the plugins.
    """


@hookspec(historic=True)
def register_vlps(register):
    """Add target vision-language models for training and evaluation: call ``register(name, factory)``.

    ``register`` is ``psic_core.vlp.register_vlp``; ``factory()`` returns a ``psic_core.vlp.TargetVLP`` and runs only
    when a run asks for ``name``. Called by ``psic_plugins.load_vlp_plugins()`` (torch and open_clip are loaded then).
    """


@hookspec(firstresult=True)
def psic_key_for(info):
    """Return the key for a locked file, or None to let the next provider answer.

    ``info`` is the file's header (``psic_core.info`` fields: ``model``, ``text``, ``width``...). Asked only for
    locked files and only when the caller gave no key (neither ``im.unlock``, ``key=`` nor ``unlocked()``).
    The first non-None answer is used; a wrong key then raises ``PsicKeyError`` like any wrong key.
    """
