"""VLP weights files: safetensors whose metadata carries the open_clip config and model name (never pickles).

Metadata keys: ``psic.vlp.format``, ``psic.vlp.name`` (what the weights are called), ``psic.vlp.open_clip_model``
(the open_clip config name), ``psic.vlp.open_clip_config`` (that config as JSON) and optionally
``psic.vlp.training`` (JSON: how the weights were made). Float tensors may be stored as fp16 to keep files small;
they load into the float32 model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import PsicModelError
from ..weights import read_metadata
from .adapter import TargetVLP
from .configs import ensure_model_config, open_clip_library

FORMAT_VERSION = "1"
PREFIX = "psic.vlp."


@dataclass(frozen=True)
class VLPFileInfo:
    path: Path
    name: str
    model_name: str
    config: dict
    training: dict


def describe_vlp_file(path: str | os.PathLike) -> VLPFileInfo:
    path = Path(path)
    if not path.is_file():
        raise PsicModelError(f"VLP weights file {path} does not exist")
    meta = read_metadata(path)
    if meta.get(PREFIX + "format") != FORMAT_VERSION:
        raise PsicModelError(
            f"{path}: not a psic VLP file (no {PREFIX}format={FORMAT_VERSION} metadata); "
            "plain open_clip weights load with load_vlp('open_clip:<model name>', pretrained=path)"
        )
    try:
        config = json.loads(meta[PREFIX + "open_clip_config"])
        model_name = meta[PREFIX + "open_clip_model"]
        training = json.loads(meta.get(PREFIX + "training", "{}"))
    except (KeyError, ValueError) as exc:
        raise PsicModelError(f"{path}: incomplete psic VLP metadata ({exc})") from None
    return VLPFileInfo(path, meta.get(PREFIX + "name") or path.stem, model_name, config, training)


def save_vlp(
    vlp: TargetVLP, path: str | os.PathLike, *, name: str, training: dict | None = None,
    dtype: torch.dtype = torch.float16,
) -> None:
    """Write ``vlp`` with its open_clip config, float tensors stored as ``dtype``."""
    from safetensors.torch import save_file

    config = open_clip_library().get_model_config(vlp.name)
    if config is None:
        raise PsicModelError(f"open_clip has no config named {vlp.name!r}; cannot describe these weights")

    state = {
        key: (value.to(dtype) if value.is_floating_point() else value).detach().cpu().contiguous()
        for key, value in vlp.model.state_dict().items()
    }
    metadata = {
        PREFIX + "format": FORMAT_VERSION,
        PREFIX + "name": name,
        PREFIX + "open_clip_model": vlp.name,
        PREFIX + "open_clip_config": json.dumps(config, sort_keys=True),
        PREFIX + "training": json.dumps(training or {}, sort_keys=True),
    }
    tmp = Path(str(path) + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_vlp_file(path: str | os.PathLike) -> TargetVLP:
    """A psic VLP file, through open_clip's own loader (its config is registered with open_clip first)."""
    info = describe_vlp_file(path)
    ensure_model_config(info.model_name, info.config)
    try:
        return TargetVLP.from_open_clip(info.model_name, pretrained=str(info.path))
    except RuntimeError as exc:
        raise PsicModelError(f"{path}: weights do not match open_clip model {info.model_name}: {exc}") from None
