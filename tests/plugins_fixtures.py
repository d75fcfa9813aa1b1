"""Fixtures and helpers shared by the tests/test_plugins_*.py modules (each imports the ones it uses).

Samples are 96x64 crops of the bundled Kodak photo, encoded with conftest's random-initialised weights: the
decodings look like noise but are deterministic, which is all the plugin tests need.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import psic_core

KEY = "correct horse battery staple"


@dataclass(frozen=True)
class Sample:
    path: Path
    data: bytes
    protected: np.ndarray  # what psic_core.decode gives without a key
    full: np.ndarray  # and with the key


@pytest.fixture(scope="session")
def crop(photo):
    return photo.crop((0, 0, 96, 64))


@pytest.fixture(scope="session")
def samples(crop, random_weights, tmp_path_factory) -> dict[str, Sample]:
    """``locked``: locked with KEY and a ``key-id`` text entry; ``open``: encoded without a key."""
    folder = tmp_path_factory.mktemp("psic-samples")
    made = {}
    for name, key, text in (("locked", KEY, {"key-id": "alice"}), ("open", None, None)):
        data = psic_core.encode(crop, model=random_weights.name, key=key, text=text)
        path = folder / f"{name}.psic"
        path.write_bytes(data)
        protected = psic_core.decode(data, output="numpy")
        full = psic_core.decode(data, key=key, full=True, output="numpy")
        made[name] = Sample(path, data, protected, full)
    return made


def run_python(code: str, random_weights, **env) -> str:
    """Run ``code`` in a fresh interpreter that finds the test weights; returns its stdout (fails on errors)."""
    environment = {**os.environ, "PSIC_WEIGHTS_PATH": str(random_weights.path.parent), **env}
    environment = {name: value for name, value in environment.items() if value is not None}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=environment, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout
