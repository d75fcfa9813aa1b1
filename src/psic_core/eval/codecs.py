"""psic weights under evaluation: one encode per image and weights (cached), both decodings, through the public API.

Several weights files may share a name (for example privacy-trained ``mshp64-q2`` and the rate-distortion-only
``mshp64-q2`` it started from), so weights are registered and addressed by path, and every report label is unique.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import psic_core
from psic_core.weights import WeightsInfo, base_init, registry, training_record

PSIC, BASELINE = "psic", "baseline"


def digest(rgb: np.ndarray) -> str:
    """Content key of a decoded image (shape and pixels)."""
    h = hashlib.sha1(repr(rgb.shape).encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()


def model_ref(info: WeightsInfo) -> str:
    """What to pass as ``model=``: the weights' name when it is unambiguous among the installed weights (cheap to
    resolve), else the path (resolving a path hashes the file on every call)."""
    if {w.sha256 for w in registry.all() if w.name == info.name} == {info.sha256}:
        return info.name
    return str(info.path)


@dataclass
class EvalWeights:
    info: WeightsInfo
    role: str  # PSIC or BASELINE
    label: str
    cache_dir: Path | None = None
    encode_seconds: float = 0.0
    decode_seconds: float = 0.0
    encodes: int = 0
    _streams: dict[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def model_ref(self) -> str:
        return model_ref(self.info)

    def describe(self) -> dict:
        i = self.info
        return {
            "label": self.label, "role": self.role, "name": i.name, "path": str(i.path), "sha256": i.sha256,
            "backbone": i.backbone, "config": i.config, "quality": i.quality,
            "training": _training_summary(i),
            "trained": training_kind(i), "init": training_record(i).get("init"),
            "base": base_init(training_record(i)),
        }

    def encode(self, rgb: np.ndarray, key: str | None = None) -> bytes:
        """The ``.psic`` bytes of ``rgb`` (encoded once per image and weights; no key, so both decodings open)."""
        key = key or digest(rgb)
        data = self._streams.get(key)
        if data is None and self.cache_dir is not None:
            path = self.cache_dir / self.info.sha256[:16] / f"{key}.psic"
            if path.is_file():
                data = path.read_bytes()
        if data is None:
            started = time.perf_counter()
            data = psic_core.encode(rgb, model=self.model_ref)
            self.encode_seconds += time.perf_counter() - started
            self.encodes += 1
            if self.cache_dir is not None:
                path = self.cache_dir / self.info.sha256[:16] / f"{key}.psic"
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(data)
                tmp.replace(path)
        self._streams[key] = data
        return data

    def decode(self, data: bytes, full: bool) -> np.ndarray:
        started = time.perf_counter()
        # model=None: the file names its weights by SHA-256, and they are registered (no re-hashing of the file)
        out = psic_core.decode(data, full=full, output="numpy")
        self.decode_seconds += time.perf_counter() - started
        return out

    def round_trip(self, rgb: np.ndarray, protected: bool = True) -> dict:
        """bpp and the full (and protected) decodings of ``rgb``."""
        data = self.encode(rgb)
        result = {"bpp": 8 * len(data) / (rgb.shape[0] * rgb.shape[1]), "full": self.decode(data, full=True)}
        if protected:
            result["protected"] = self.decode(data, full=False)
        return result


def training_kind(info: WeightsInfo) -> str | None:
    """``"privacy"`` for weights from the PSIC trainer, ``"rd"`` for rate-distortion-only ones, None if unknown."""
    training = training_record(info)
    trainer = str(training.get("trainer") or training.get("script") or "")
    if trainer.endswith(".privacy"):
        return "privacy"
    if trainer.endswith(".rd"):
        return "rd"
    return None


def _training_summary(info: WeightsInfo) -> dict | None:
    """The scalar fields of the training record (nested configs and histories stay in the weights file)."""
    training = training_record(info)
    return {k: v for k, v in training.items() if isinstance(v, (str, int, float, bool)) or v is None} or None


def _resolve(spec: str) -> WeightsInfo:
    return registry.register(spec) if Path(spec).is_file() else registry.find(spec)


def resolve_weights(psic_specs=None, baseline_specs=None, cache_dir=None, log=None) -> list[EvalWeights]:
    """The weights to evaluate.

    ``psic_specs`` (names or paths); by default the installed weights made by the PSIC trainer (their metadata says
    so), or, when none are installed, every installed weights file that is not a baseline. ``baseline_specs``: the
    same backbones trained without PSIC; by default the installed rate-distortion-only weights; ``[]`` for none.
    """
    installed = registry.all()
    baselines = [_resolve(s) for s in baseline_specs or []]
    if psic_specs:
        psic = [_resolve(s) for s in psic_specs]
    else:
        psic = [w for w in installed if training_kind(w) == "privacy"]
        if not psic:
            taken = {b.sha256 for b in baselines}
            psic = [w for w in installed if w.sha256 not in taken]
            if log and psic:
                log("no privacy-trained weights installed: evaluating every installed weights file as psic")
    if baseline_specs is None:
        taken = {w.sha256 for w in psic}
        baselines = [w for w in installed if training_kind(w) == "rd" and w.sha256 not in taken]

    def order(infos):
        unique = {}
        for info in infos:
            unique.setdefault(info.sha256, info)
        return sorted(unique.values(), key=lambda i: (i.quality if i.quality is not None else 1 << 30, i.name))

    psic = order(psic)
    psic_sha = {w.sha256 for w in psic}
    baselines = [b for b in order(baselines) if b.sha256 not in psic_sha]
    for info in psic + baselines:
        registry.register(info.path)  # decodes find the weights by SHA-256
    result, labels = [], set()
    for role, infos in ((PSIC, psic), (BASELINE, baselines)):
        for info in infos:
            label = info.name if role == PSIC else f"{info.name} (no PSIC)"
            if label in labels:
                label = f"{label} [{info.sha256[:8]}]"
            labels.add(label)
            result.append(EvalWeights(info, role, label, Path(cache_dir) if cache_dir else None))
    return result
