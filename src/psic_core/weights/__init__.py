"""Weights: safetensors files that carry their architecture in the metadata; found by name or SHA-256.

The registry holds the bundled files in this folder, every ``*.safetensors`` in the folders listed in the
``PSIC_WEIGHTS_PATH`` environment variable (``os.pathsep``-separated), and files added with ``register_weights``
(the plugin hook ``register_weights`` calls it). Listing and identifying weights never imports torch: the
safetensors header is JSON and read directly.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PsicModelError
from ..quality import check_variable_quality

BUNDLED_DIR = Path(__file__).resolve().parent
DEFAULT_QUALITY = 2
DEFAULT_FAMILY = "mshp64"
#: metadata keys every psic weights file carries
META_PREFIX = "psic."
FORMAT_VERSION = "1"
_HEADER_LIMIT = 16 * 1024 * 1024
#: metadata key of variable-rate weights: their continuous quality range, JSON [low, high]
QUALITY_RANGE_KEY = META_PREFIX + "quality_range"


@dataclass(frozen=True)
class WeightsInfo:
    name: str
    path: Path
    sha256: str
    backbone: str
    config: dict = field(hash=False)
    quality: int | None
    metadata: dict = field(hash=False)

    @property
    def quality_range(self) -> tuple[float, float] | None:
        """The continuous quality range of variable-rate weights (metadata ``psic.quality_range``, written from the
        model's ``quality_range``); None for weights that code one rate."""
        try:
            low, high = json.loads(self.metadata[QUALITY_RANGE_KEY])
            return float(low), float(high)
        except (KeyError, ValueError, TypeError):
            return None


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, read without torch."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > _HEADER_LIMIT:
                raise PsicModelError(f"{path}: safetensors header too large")
            header = json.loads(f.read(size))
    except (OSError, struct.error, ValueError) as exc:
        raise PsicModelError(f"{path}: not a readable safetensors file ({exc})") from None
    return header.get("__metadata__", {}) or {}


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(path: str | os.PathLike) -> WeightsInfo:
    path = Path(path)
    meta = read_metadata(path)
    if meta.get("psic.format") != FORMAT_VERSION:
        raise PsicModelError(f"{path}: not a psic weights file (no psic.format={FORMAT_VERSION} metadata)")
    try:
        config = json.loads(meta["psic.config"])
        backbone = meta["psic.backbone"]
        name = meta.get("psic.name") or path.stem
    except (KeyError, ValueError) as exc:
        raise PsicModelError(f"{path}: incomplete psic metadata ({exc})") from None
    quality = int(meta["psic.quality"]) if meta.get("psic.quality", "").isdigit() else None
    return WeightsInfo(name, path, file_sha256(path), backbone, config, quality, meta)


class WeightsRegistry:
    def __init__(self):
        self._lock = threading.Lock()
        self._extra: list[Path] = []
        self._cache: dict[Path, tuple[float, WeightsInfo]] = {}

    def register(self, path: str | os.PathLike) -> WeightsInfo:
        info = describe(path)
        with self._lock:
            if info.path not in self._extra:
                self._extra.append(info.path)
        return info

    def _candidates(self) -> list[Path]:
        paths = sorted(BUNDLED_DIR.glob("*.safetensors"))
        for folder in filter(None, os.environ.get("PSIC_WEIGHTS_PATH", "").split(os.pathsep)):
            paths += sorted(Path(folder).glob("*.safetensors"))
        return paths + list(self._extra)

    def _describe_cached(self, path: Path) -> WeightsInfo:
        mtime = path.stat().st_mtime
        with self._lock:
            hit = self._cache.get(path)
        if hit and hit[0] == mtime:
            return hit[1]
        info = describe(path)
        with self._lock:
            self._cache[path] = (mtime, info)
        return info

    def unregister(self, path: str | os.PathLike) -> None:
        with self._lock:
            resolved = Path(path).resolve()
            self._extra = [p for p in self._extra if p.resolve() != resolved]

    def all(self) -> list[WeightsInfo]:
        """Every installed weights file. Files that vanished since they were registered, and other safetensors
        files in the searched folders (a VLP, a checkpoint), are skipped."""
        found = []
        for path in self._candidates():
            try:
                found.append(self._describe_cached(path))
            except (PsicModelError, OSError):
                continue
        return found

    def find(self, model: str | os.PathLike | None = None, quality: float | None = None) -> WeightsInfo:
        """Resolve ``model`` (a name, a family with ``quality``, or a path to a .safetensors file).

        Variable-rate weights (named or a path) take ``quality`` as a number in their range, checked here; for
        per-level families it names a level (``check_quality``), and a path to one-rate weights ignores it."""
        if model is not None and (os.sep in str(model) or str(model).endswith(".safetensors")):
            if not Path(model).is_file():
                raise PsicModelError(f"weights file {model} does not exist")
            return self._check_variable_quality(describe(model), quality)
        for info in self.all() if model is not None else ():
            if info.name == str(model) and info.quality_range is not None:
                return self._check_variable_quality(info, quality)
        family = model or DEFAULT_FAMILY
        if quality is not None:
            self.check_quality(str(family), quality)
        level = DEFAULT_QUALITY if quality is None else quality
        wanted = {str(family)} if quality is None and model else {f"{family}-q{level}"}
        for info in self.all():
            if info.name in wanted:
                return info
        known = ", ".join(sorted(i.name for i in self.all())) or "none"
        raise PsicModelError(f"no weights named {' or '.join(sorted(wanted))} (available: {known})")

    @staticmethod
    def _check_variable_quality(info: WeightsInfo, quality) -> WeightsInfo:
        if info.quality_range is not None and quality is not None:
            check_variable_quality(quality, info.quality_range, f"the variable-rate weights {info.name}")
        return info

    def quality_levels(self, family: str = DEFAULT_FAMILY) -> list[int]:
        """The quality levels installed for a model family: the ``quality`` of its weights named ``family-qN``."""
        return sorted({info.quality for info in self.all()
                       if info.quality is not None and info.name == f"{family}-q{info.quality}"})

    def check_quality(self, family: str, quality) -> None:
        """Refuse a quality that is not one of the family's installed levels, naming the ones that are."""
        levels = self.quality_levels(family)
        if not levels:
            return  # not a family with levels: find() reports the weights it cannot find
        if levels == list(range(levels[0], levels[-1] + 1)):
            allowed = f"an integer from {levels[0]} to {levels[-1]}"
        else:
            allowed = "one of " + ", ".join(map(str, levels))
        if isinstance(quality, bool) or not isinstance(quality, numbers.Integral) or quality not in levels:
            raise ValueError(f"quality must be {allowed} (the levels of the {family} weights; a psic level, not "
                             f"JPEG's 0-100), not {quality!r}")

    def by_sha256(self, sha256: str, name_hint: str = "") -> WeightsInfo:
        """The weights with this SHA-256, else installed weights that declare they decode its bitstreams (a
        half-precision copy, a stage-2 continuation: the same entropy path, see ``save_weights``)."""
        found = self.all()
        for info in found:
            if info.sha256 == sha256:
                return info
        for info in found:
            if sha256 in decodes_sha256(info):
                return info
        raise PsicModelError(
            f"this file needs the weights {name_hint or '?'} with SHA-256 {sha256}, which are not installed; "
            "add their folder to PSIC_WEIGHTS_PATH or name their .safetensors file as the model "
            "(psic decode --model PATH; model=PATH in Python)"
        )


registry = WeightsRegistry()


# Module names are matched at any depth of a tensor's key (``in_modules``): the hyperprior backbones hold these
# modules at the top, the checkerboard backbone inside CompressAI's latent codecs (``latent_codec.hyper.h_s.``).
#: entropy models (learned densities, quantiles, CDF tables): small and precision-sensitive, float32 in every file
ENTROPY_MODELS = ("entropy_bottleneck.", "gaussian_conditional.")
#: what an entropy decoder evaluates (the hyper-synthesis, a context model's prediction and parameter networks, and
#: a variable-rate model's gains and reconstruction offsets):
#: a half-precision *copy* of float32 weights keeps all of it float32, so files made with the original decode to
#: the same symbols with the copy (only the pixels move, by rounding)
ENTROPY_PATH = ENTROPY_MODELS + ("h_s.", "context_prediction.", "entropy_parameters.", "Gain", "QuantABCD.")
#: metadata key: SHA-256s of earlier weights whose bitstreams these weights decode (same entropy path)
DECODES_KEY = META_PREFIX + "decodes_sha256"


def in_modules(key: str, modules: tuple[str, ...]) -> bool:
    """Whether the state-dict ``key`` belongs to one of ``modules`` (names ending in ".", at any depth)."""
    return key.startswith(modules) or any("." + module in key for module in modules)


def storage_state(model, half: bool = False, keep_float32: tuple[str, ...] = ENTROPY_MODELS) -> dict:
    """The tensors to save: float32 as trained, or with ``half`` every float32 tensor outside ``keep_float32`` as
    float16 (loading upcasts them: ``instantiate`` copies into float32 parameters). New weights need only their
    entropy models exact; a copy of weights that made files already keeps ``ENTROPY_PATH``."""
    import torch

    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu().contiguous()
        if half and value.dtype == torch.float32 and not in_modules(key, keep_float32):
            value = value.half()
        state[key] = value
    return state


def save_weights(model, path: str | os.PathLike, *, name: str, quality: int | None = None, extra: dict | None = None,
                 half: bool = False, keep_float32: tuple[str, ...] = ENTROPY_MODELS, decodes: list[str] = ()):
    """Save a backbone (after ``model.update(force=True)``) with its architecture in the metadata. ``half`` and
    ``keep_float32``: see ``storage_state``. ``decodes``: SHA-256s of earlier weights with the same entropy path,
    whose files these weights may decode in their place."""
    from safetensors.torch import save_file

    metadata = {
        "psic.format": FORMAT_VERSION,
        "psic.name": name,
        "psic.backbone": model.backbone_name,
        "psic.config": json.dumps(model.config, sort_keys=True),
    }
    if quality is not None:
        metadata["psic.quality"] = str(quality)
    if getattr(model, "variable_rate", False):
        metadata[QUALITY_RANGE_KEY] = json.dumps(list(model.quality_range))
    for key, value in (extra or {}).items():
        metadata[META_PREFIX + key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if decodes:
        metadata[DECODES_KEY] = json.dumps(sorted(set(decodes)))
    tmp = Path(str(path) + ".tmp")
    save_file(storage_state(model, half, keep_float32), str(tmp), metadata=metadata)
    os.replace(tmp, path)


def decodes_sha256(info: WeightsInfo) -> list[str]:
    """The SHA-256s of earlier weights whose files ``info`` decodes (``save_weights(decodes=...)``)."""
    try:
        listed = json.loads(info.metadata.get(DECODES_KEY) or "[]")
    except ValueError:
        return []
    return [s for s in listed if isinstance(s, str)] if isinstance(listed, list) else []


def training_record(info: WeightsInfo) -> dict:
    """The ``psic.training`` metadata of a weights file (empty when absent or unreadable)."""
    try:
        training = json.loads(info.metadata.get(META_PREFIX + "training") or "{}")
    except ValueError:
        return {}
    return training if isinstance(training, dict) else {}


def init_training_record(record: dict) -> dict | None:
    """The training record of the weights ``record`` started from (by SHA-256, else by name), when installed."""
    try:
        info = registry.by_sha256(record["init_sha256"]) if record.get("init_sha256") else registry.find(record["init"])
    except (PsicModelError, KeyError, ValueError):
        return None
    return training_record(info) or None


def base_init(training: dict) -> str | None:
    """The weights a PSIC training history started from (its rate-distortion init): a run keeps the record of the
    weights it continued under ``continues``; this follows PSIC records back to the first one's ``init``."""
    trainer = training.get("trainer")
    while isinstance(training.get("continues"), dict) and training["continues"].get("trainer") == trainer:
        training = training["continues"]
    return training.get("init")


_models: dict[str, object] = {}
_models_lock = threading.Lock()


def load_model(info: WeightsInfo):
    """The backbone for ``info`` in eval mode, loaded once per SHA-256 and shared (inference is read-only)."""
    with _models_lock:
        model = _models.get(info.sha256)
        if model is None:
            model = instantiate(info).eval()
            _models[info.sha256] = model
        return model


def instantiate(info: WeightsInfo, grow: dict | None = None):
    """A fresh backbone with the weights of ``info`` loaded (for training; decoding uses ``load_model``).

    ``grow`` overrides config entries that add modules (``{"cltg_scales": True}``, ``{"cltg_latent": True}``,
    ``{"cltg_sites": "official+rgb"}``): the parameters the file lacks keep their fresh initialisation; every
    parameter the file has must still fit (so ``"official"`` sites, which drop the RGB bias, do not grow onto
    ``"blocks"`` weights).
    """
    from safetensors.torch import load_file

    from ..models import build_backbone

    if file_sha256(info.path) != info.sha256:
        raise PsicModelError(f"{info.path} changed on disk since it was registered")
    config = info.config | (grow or {})
    model = build_backbone(info.backbone, **config)
    try:
        result = model.load_state_dict(load_file(str(info.path)), strict=not grow)
    except (RuntimeError, KeyError) as exc:
        raise PsicModelError(f"{info.path}: weights do not match backbone {info.backbone} {config}: {exc}") from None
    if grow and result.unexpected_keys:
        raise PsicModelError(f"{info.path}: weights do not match backbone {info.backbone} {config}: unexpected "
                             f"{', '.join(result.unexpected_keys)}")
    model.update(force=False)
    return model
