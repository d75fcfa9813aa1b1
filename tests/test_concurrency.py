"""Concurrency and determinism: shared models, threads, processes, torch thread counts and tilings."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import psic_core
from psic_core import container
from psic_core.weights import load_model


def digest(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def image(kodim07):
    return np.asarray(kodim07.crop((100, 100, 290, 230)))


def test_the_model_is_loaded_once_per_weights(random_weights):
    assert load_model(random_weights) is load_model(random_weights)


def test_eight_threads_encode_and_decode_like_one(image, random_weights):
    name = random_weights.name
    reference = psic_core.encode(image, model=name, key="k")
    expected = {c: digest(psic_core.decode(reference, key="k", full=c, output="numpy")) for c in (False, True)}
    with ThreadPoolExecutor(8) as pool:
        encoded = list(pool.map(lambda _: psic_core.encode(image, model=name), range(8)))
        decoded = list(pool.map(lambda i: psic_core.decode(reference, key="k", full=bool(i % 2), output="numpy"),
                                range(16)))
    plain = psic_core.encode(image, model=name)
    assert all(e == plain for e in encoded)
    assert all(digest(d) == expected[bool(i % 2)] for i, d in enumerate(decoded))


CHILD = """
import hashlib, sys
import numpy as np, torch
torch.set_num_threads(int(sys.argv[1]))
import psic_core
from PIL import Image
mode, path = sys.argv[2], sys.argv[3]
if mode == "encode":
    image = np.asarray(Image.open(sys.argv[4]).convert("RGB"))
    open(path, "wb").write(psic_core.encode(image, model=sys.argv[5], tile=int(sys.argv[6])))
else:
    out = psic_core.decode(open(path, "rb").read(), full=True, output="numpy")
    print(hashlib.sha256(out.tobytes()).hexdigest())
"""


def child(tmp_path, random_weights, *args) -> subprocess.Popen:
    env = dict(os.environ, PSIC_WEIGHTS_PATH=str(random_weights.path.parent))
    return subprocess.Popen([sys.executable, "-c", CHILD, *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process) -> str:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]
    return out.strip()


def test_thread_counts_and_processes_agree(tmp_path, kodim07, random_weights):
    """Encoded with 1 or 2 torch threads, decoded with 1 or 2, in two processes at once: identical pixels."""
    source = tmp_path / "in.png"
    kodim07.crop((0, 0, 200, 150)).save(source)
    files = {n: tmp_path / f"t{n}.psic" for n in (1, 2)}
    for p in [child(tmp_path, random_weights, n, "encode", files[n], source, random_weights.name, 1024) for n in (1, 2)]:
        finish(p)
    hashes = set()
    for path in files.values():
        hashes |= {finish(p) for p in [child(tmp_path, random_weights, n, "decode", path) for n in (1, 2)]}
    assert len(hashes) == 1


def test_a_different_tiling_still_decodes_exactly_what_it_encoded(kodim07, random_weights):
    image = np.asarray(kodim07.crop((0, 0, 200, 150)))
    for tile in (64, 128, 1024):
        data = psic_core.encode(image, model=random_weights.name, tile=tile)
        f = container.read(data)
        assert len(f.tiles) == f.header.tile_count
        assert psic_core.decode(data, output="numpy").shape == image.shape
