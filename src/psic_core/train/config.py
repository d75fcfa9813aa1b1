"""The trainers' settings, checked before any work: every PSIC config key with its default, type and allowed values,
the same checks for the argparse trainers, and their output files' folders.

A PSIC config is built from ``SCHEMA``'s defaults, then a TOML file, then ``--set section.key=value`` overrides;
``load_config`` refuses unknown sections and keys (naming the known ones) and any value of the wrong type or out of
range (naming what is allowed), so that a typo fails in one line at start-up instead of a traceback mid-training.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models.base import ConditionalCodec
from .device import DEFAULT_CHANNELS_LAST, DEFAULT_COMPILE, PRECISIONS
from .eot import check_transforms
from .pairs import BATCHING
from .uaeo import CONFIDENT_LOSSES, SPLITS, TARGETED_CLASSES, UNCERTAIN_TARGETS, WEIGHTINGS

LABEL_CANDIDATES = ("batch", "source")
STAGES = ([1], [2], [1, 2])
#: training crops go through the backbone unpadded, so their sides must be a multiple of its padding multiple
CROP_MULTIPLE = ConditionalCodec.padding_multiple


def _literal(raw: str) -> Any:
    """A ``--set`` value as a Python literal (``[1, 2]``, ``0.5``, ``"x"``), or the raw text when it is none."""
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Setting:
    """One config key: its ``default``, ``parse`` (a ``--set`` value's text) and ``check`` (the value, or
    ValueError naming what is allowed)."""

    def parse(self, raw: str):
        return _literal(raw)


@dataclass(frozen=True)
class Text(Setting):
    """A string; ``options`` limits it to those values."""

    default: str
    options: tuple[str, ...] = ()

    def parse(self, raw: str):
        # a bare word is the text itself (--set output.name=q2); a quoted one is unquoted (--set output.name='"2"')
        value = _literal(raw)
        return value if isinstance(value, str) else raw

    def check(self, name: str, value):
        if not isinstance(value, str) or (self.options and value not in self.options):
            allowed = f"one of {', '.join(self.options)}" if self.options else "a string"
            raise ValueError(f"{name} must be {allowed}, not {value!r}")
        return value


@dataclass(frozen=True)
class Device(Text):
    def check(self, name: str, value):
        if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError(f"{name} must be auto, cpu, cuda or cuda:N (a GPU index), not {value!r}")
        return value


@dataclass(frozen=True)
class Flag(Setting):
    default: bool

    def parse(self, raw: str):
        return {"true": True, "false": False}.get(raw.strip().lower(), _literal(raw))

    def check(self, name: str, value):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, not {value!r}")
        return value


@dataclass(frozen=True)
class Number(Setting):
    """An int or float at least ``minimum`` (above it when ``exclusive``), at most ``maximum``; stored as float.
    (``default`` is None for a list item or an argparse option, whose defaults live elsewhere.)"""

    minimum: float | None = None
    exclusive: bool = False
    maximum: float | None = None
    default: float | None = None

    def describe(self) -> str:
        low = "" if self.minimum is None else f"{'>' if self.exclusive else '>='} {self.minimum:g}"
        high = "" if self.maximum is None else f"<= {self.maximum:g}"
        return "a number" + (f" {' and '.join(filter(None, (low, high)))}" if low or high else "")

    def accepts(self, value) -> bool:
        return _is_number(value) and not (
            (self.minimum is not None and (value <= self.minimum if self.exclusive else value < self.minimum))
            or (self.maximum is not None and value > self.maximum))

    def check(self, name: str, value):
        if not self.accepts(value):
            raise ValueError(f"{name} must be {self.describe()}, not {value!r}")
        return float(value)


@dataclass(frozen=True)
class Integer(Setting):
    """An int at least ``minimum``, and a multiple of ``multiple`` (``default`` as for Number)."""

    minimum: int = 0
    multiple: int = 1
    default: int | None = None

    def describe(self) -> str:
        if self.multiple > 1:
            return f"a multiple of {self.multiple} (at least {max(self.minimum, self.multiple)})"
        return f"an integer >= {self.minimum}"

    def accepts(self, value) -> bool:
        return (isinstance(value, int) and not isinstance(value, bool) and value >= self.minimum
                and value % self.multiple == 0 and (value > 0 or self.multiple == 1))

    def check(self, name: str, value):
        if not self.accepts(value):
            raise ValueError(f"{name} must be {self.describe()}, not {value!r}")
        return value


_UNIT_INTERVAL = Number(minimum=0, exclusive=True, maximum=1)


@dataclass(frozen=True)
class Threshold(Setting):
    """UAEO's uncertainty split: ``"median"`` (of the batch) or a fixed value in (0, 1]."""

    default: str | float

    def check(self, name: str, value):
        if value == "median":
            return value
        if not _UNIT_INTERVAL.accepts(value):
            raise ValueError(f'{name} must be "median" or a number in (0, 1], not {value!r}')
        return float(value)


@dataclass(frozen=True)
class Stages(Setting):
    default: list[int]

    def check(self, name: str, value):
        if not (isinstance(value, list) and value in [list(s) for s in STAGES]
                and all(type(s) is int for s in value)):
            raise ValueError(f"{name} must be one of {', '.join(map(str, STAGES))}, not {value!r}")
        return value


@dataclass(frozen=True)
class PerStage(Setting):
    """A list with one ``item`` per stage in ``train.stages``; left unset (default None), each listed stage's
    default, so ``--set train.stages=[2]`` alone trains stage 2 with stage 2's defaults."""

    defaults: dict[int, float]
    item: Number | Integer
    default: list | None = None

    def check(self, name: str, value, stages: list[int]):
        if value is None:
            return [self.defaults[s] for s in stages]
        if not (isinstance(value, list) and len(value) == len(stages) and all(map(self.item.accepts, value))):
            example = [self.defaults[s] for s in stages]
            raise ValueError(f"{name} must be a list of {len(stages)} values, one per stage in train.stages {stages}, "
                             f"each {self.item.describe()} (e.g. {example}), not {value!r}")
        return [self.item.check(name, v) for v in value]


@dataclass(frozen=True)
class Names(Setting):
    """A list of distinct non-empty strings (``--set`` takes a Python list, ``'["a", "b"]'``)."""

    default: list[str]

    def check(self, name: str, value):
        if not (isinstance(value, list) and all(isinstance(v, str) and v for v in value)
                and len(set(value)) == len(value)):
            raise ValueError(f"{name} must be a list of distinct non-empty strings, not {value!r}")
        return value


@dataclass(frozen=True)
class Transforms(Setting):
    """``train.eot``: distinct names from eot.TRANSFORMS ([]: off)."""

    default: list[str]

    def check(self, name: str, value):
        return check_transforms(name, value)


SCHEMA: dict[str, dict[str, Any]] = {
    "data": {
        "captions": Text(""),  # a JSON-lines file of {"file", "caption"[, "split"]}
        "labels": Text(""),  # a CSV file with the columns file, label[, split, source]
        "images": Text(""),  # a folder of photos for train.photo_batch
        "split": Text("train"),  # only the rows of this split ("": every row)
    },
    "model": {
        "init": Text(""),  # start from these weights (a registered name or a .safetensors path)
        "backbone": Text("mean-scale-hyperprior"),
        "N": Integer(minimum=1, default=64),
        "M": Integer(minimum=1, default=96),
        "cltg_scales": Flag(False),  # CLTG gains as well as biases (grown onto init weights that lack them)
        # where CLTG adds biases: after the 4 deconvolutions, or the official placement (latent scale, two per hidden
        # block, no RGB; from scratch only), or the official one plus the RGB output's (grows onto "blocks" weights)
        "cltg_sites": Text("blocks", options=("blocks", "official", "official+rgb")),
        "cltg_latent": Flag(False),  # an image-specific trigger at the latent scale, protected decoding only (grown)
    },
    "vlp": {
        "name": Text("refclip-s"),
        "pretrained": Text(""),  # open_clip tag or local file, for open_clip:NAME
        # further target VLPs (names or .safetensors paths, as vlp.name, loaded without vlp.pretrained): the privacy
        # and keep terms are averaged over vlp.name and these ([]: vlp.name alone)
        "ensemble": Names([]),
    },
    "train": {
        "stages": Stages([1, 2]),
        # per stage: wall clock minutes (counted across resumes), step cap, privacy share relative to
        # rate-distortion, learning rate
        "minutes": PerStage({1: 10.0, 2: 40.0}, Number(minimum=0, exclusive=True)),
        "max_steps": PerStage({1: 10**9, 2: 10**9}, Integer()),  # 0: export the start weights unchanged
        "beta": PerStage({1: 0.1, 2: 1.0}, Number(minimum=0)),
        "lr": PerStage({1: 1e-4, 2: 1e-4}, Number(minimum=0, exclusive=True)),
        "gamma": Number(minimum=0, default=1.0),  # weight of the full decoding's semantic-keeping term
        "lmbda": Number(minimum=0, exclusive=True, default=0.025),
        "batch": Integer(minimum=1, default=8),
        "photo_batch": Integer(default=0),  # extra rate-distortion-only crops per step from data.images
        "crop": Integer(multiple=CROP_MULTIPLE, default=128),
        "batching": Text("mixed", BATCHING),  # "source": every batch from one source (its labels compete)
        # a labelled pair's UAEO candidates: the batch's captions, or "source" (its source's class prompts, as
        # zero-shot classification compares)
        "label_candidates": Text("batch", LABEL_CANDIDATES),
        "confident": Text("cosine", CONFIDENT_LOSSES),  # the paper's cosine, or "centred" on the candidates
        # confident pairs: evidential uncertainty at most train.threshold, or "correct" (the official code's: the VLP
        # ranks the own text first on the original; train.threshold must then stay unset)
        "split_by": Text("uncertainty", SPLITS),
        "threshold": Threshold("median"),
        # uncertain pairs' targets: softmax(-s/T) over the candidates, or "hard" (the official code's one-hot on the
        # least likely)
        "uncertain_targets": Text("soft", UNCERTAIN_TARGETS),
        "temperature": Number(minimum=0, exclusive=True, default=1.0),  # softness of the least-likely-caption labels
        # UAEO's inverse-magnitude weights: detached, or "harmonic" (the official code's, in the graph)
        "weighting": Text("detached", WEIGHTINGS),
        # weight of the targeted zero-shot term (labelled pairs toward one wrong class of their source; 0: off) and
        # how that class is chosen on the original
        "targeted": Number(minimum=0, default=0.0),
        "targeted_class": Text("least_likely", TARGETED_CLASSES),
        # weight of the looks term (frequency-weighted energy of protected - full, in units of the distortion; 0: off)
        "looks": Number(minimum=0, default=0.0),
        # expectation over transformations (train/eot.py): per step, with probability eot_p, one of these transforms
        # (resize, jpeg, blur) on the protected decoding the privacy terms read ([]: off)
        "eot": Transforms([]),
        "eot_p": Number(minimum=0, maximum=1, default=0.5),
        "seed": Integer(default=0),
        "threads": Integer(default=0),  # torch threads (0: torch's default)
        "device": Device("auto"),
        # "bf16": autocast, entropy models in float32 (device.py). fp32 until an A/B of the privacy losses under bf16
        # (the rate-distortion trainer's default "auto" was adopted by docs/experiments/precision-ab.md)
        "precision": Text("fp32", PRECISIONS),
        "channels_last": Flag(DEFAULT_CHANNELS_LAST),  # NHWC activations
        "compile": Flag(DEFAULT_COMPILE),  # torch.compile the training forward
    },
    "output": {
        "out": Text(""),  # the exported weights (.safetensors)
        "name": Text(""),  # stored in the weights (default: out's stem)
        "quality": Integer(default=0),  # quality level stored in the weights (0: none)
        "checkpoint": Text(""),
        "log": Text(""),  # CSV of the loss terms per step
        "half": Flag(False),  # store float16 outside the entropy path (weights.storage_state): about 0.7x the size
    },
}

#: the output keys that name files the trainer writes
OUTPUT_FILES = ("out", "checkpoint", "log")


def _known(section: str) -> str:
    return ", ".join(SCHEMA[section])


def load_config(path: str | os.PathLike | None, overrides: list[str]) -> dict:
    """Defaults, then the TOML file, then ``section.key=value`` overrides, every value checked (ValueError)."""
    given: dict[str, dict] = {section: {} for section in SCHEMA}
    if path:
        try:
            with open(path, "rb") as f:
                document = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML ({exc})") from None
        for section, values in document.items():
            if section not in SCHEMA:
                raise ValueError(f"{path}: unknown section [{section}] (known: {', '.join(SCHEMA)})")
            if not isinstance(values, dict):
                raise ValueError(f"{path}: {section} must be a [{section}] table of keys")
            given[section].update(values)
    for item in overrides:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise ValueError(f"override {item!r} must look like section.key=value")
        if section not in SCHEMA:
            raise ValueError(f"override {item!r}: unknown section {section!r} (known: {', '.join(SCHEMA)})")
        spec = SCHEMA[section].get(name)
        given[section][name] = spec.parse(raw) if spec else raw  # an unknown key is reported below
    for section, values in given.items():
        unknown = sorted(set(values) - set(SCHEMA[section]))
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(f'{section}.{k}' for k in unknown)} (known in "
                             f"[{section}]: {_known(section)})")
    config: dict[str, dict] = {section: {} for section in SCHEMA}
    stages_spec = SCHEMA["train"]["stages"]
    stages = stages_spec.check("train.stages", given["train"].get("stages", stages_spec.default))
    for section, specs in SCHEMA.items():
        for name, spec in specs.items():
            value = given[section].get(name, spec.default)
            key = f"{section}.{name}"
            config[section][name] = spec.check(key, value, stages) if isinstance(spec, PerStage) else \
                spec.check(key, value)
    if config["vlp"]["name"] in config["vlp"]["ensemble"]:
        raise ValueError(f"vlp.ensemble lists the further target VLPs; it must not repeat vlp.name "
                         f"{config['vlp']['name']!r}")
    train = config["train"]
    if train["split_by"] == "correct" and train["threshold"] != SCHEMA["train"]["threshold"].default:
        raise ValueError('train.threshold applies to train.split_by = "uncertainty" only; with "correct" leave it '
                         f'unset, not {train["threshold"]!r}')
    return config


def check_ready(config: dict) -> None:
    """What a loaded PSIC config needs from this machine, checked before any work: the training extra, its input
    files, its start weights or backbone, and its outputs' folders (created here)."""
    from ..extras import require
    from ..models import BACKBONES
    from ..weights import registry

    require("train", "psic train")
    data = config["data"]
    if not (data["captions"] or data["labels"]):
        raise ValueError("no training pairs: set data.captions (a JSON-lines file) and/or data.labels (a CSV file)")
    for key, is_kind, kind in (("captions", Path.is_file, "file"), ("labels", Path.is_file, "file"),
                               ("images", Path.is_dir, "folder")):
        if data[key] and not is_kind(Path(data[key])):
            raise FileNotFoundError(f"data.{key}: no {kind} {data[key]}")
    if config["train"]["photo_batch"] and not data["images"]:
        raise ValueError("train.photo_batch needs data.images (a folder of photos)")
    model = config["model"]
    if model["init"]:
        registry.find(model["init"])
    elif model["backbone"] not in BACKBONES:
        raise ValueError(f"model.backbone must be one of {', '.join(sorted(BACKBONES))}, not {model['backbone']!r}")
    prepare_output_files(config["output"][key] for key in OUTPUT_FILES)


def prepare_output_files(paths) -> None:
    """Create the folders of the files a trainer will write and check that it can write there, before training
    (so a typo in an output path fails at start-up, not after the training it would have saved)."""
    for path in filter(None, paths):
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"output {path} is a folder; give a file name")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"cannot create the folder of output {path}: {exc.strerror or exc}") from None
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise PermissionError(f"output folder {path.parent} is not writable")
        if path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(f"output {path} exists and is not writable")


def argument(spec: Number | Integer):
    """An argparse ``type`` checking ``spec`` (the argparse trainers' options: range errors name what is allowed)."""

    def convert(raw: str):
        value = _literal(raw)
        if not spec.accepts(value):
            raise argparse.ArgumentTypeError(f"must be {spec.describe()}, not {raw!r}")
        return spec.check("", value)

    return convert
