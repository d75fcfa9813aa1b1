"""open_clip model configs: the bundled ones in ``configs/`` and configs carried inside VLP weights files.

open_clip builds models by config name only, so a config read from a weights file is registered under its name
before the model is created. Names are global in open_clip: registering a different config under a taken name is
an error rather than a silent replacement.
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

from ..errors import PsicModelError
from ..extras import require

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@functools.cache
def open_clip_library():
    """open_clip with the bundled model configs registered; imported on first use, since it is the ``train`` extra
    (importing psic_core.vlp, as the trainer's data code does, must not need it)."""
    require("train", "a target VLP (open_clip)")
    import open_clip

    open_clip.add_model_config(CONFIG_DIR)
    return open_clip


def ensure_model_config(name: str, config: dict) -> None:
    """Make ``config`` known to open_clip as ``name`` (no-op when it already is)."""
    open_clip = open_clip_library()
    known = open_clip.get_model_config(name)
    if known == config:
        return
    if known is not None:
        raise PsicModelError(f"open_clip already has a different model config named {name!r}")
    if not all(key in config for key in ("embed_dim", "vision_cfg", "text_cfg")):
        raise PsicModelError(f"model config {name!r} lacks embed_dim, vision_cfg or text_cfg")
    # add_model_config only reads files; open_clip keeps the parsed config after the file is gone
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{name}.json"
        path.write_text(json.dumps(config))
        open_clip.add_model_config(path)
