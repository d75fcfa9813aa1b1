"""Shared fixtures: small real photos cut from the bundled Kodak sample, and throw-away random weights."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("PSIC_DISABLE_PLUGIN_AUTOLOAD", "1")

from psic_core.cli import SAMPLE  # noqa: E402
from weights_fixtures import random_codec_weights  # noqa: E402


@pytest.fixture(scope="session")
def kodim07() -> Image.Image:
    with Image.open(SAMPLE) as im:
        return im.convert("RGB")


@pytest.fixture(scope="session")
def photo(kodim07) -> Image.Image:
    """A 192x128 crop of a real photo (odd sizes are cut from it where a test needs them)."""
    return kodim07.crop((300, 200, 492, 328))


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory):
    """A registered, random-initialised mean-scale model: decodes deterministically, fast to build."""
    from psic_core.weights import registry

    path = tmp_path_factory.mktemp("weights") / "random-mshp.safetensors"
    return registry.register(random_codec_weights(path, name="random-mshp"))


def array(im: Image.Image) -> np.ndarray:
    return np.asarray(im)
