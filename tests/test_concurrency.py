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
import sys
import numpy as np, torch
torch.set_num_threads(int(sys.argv[1]))
import psic_core
from PIL import Image
mode, path = sys.argv[2], sys.argv[3]
if mode == "encode":
    image = np.asarray(Image.open(sys.argv[4]).convert("RGB"))
    open(path, "wb").write(psic_core.encode(image, tile=int(sys.argv[5])))
else:
    data = open(path, "rb").read()
    decoded, again = (psic_core.decode(data, full=True, output="numpy") for _ in range(2))
    assert np.array_equal(decoded, again), "the same thread count decoded different pixels"
    np.save(sys.argv[4], decoded)
"""


def child(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process) -> str:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]
    return out.strip()


def test_thread_counts_keep_the_bytes_and_symbols_and_pixels_within_one(tmp_path, kodim07):
    """docs/format.md, *Determinism*, on a real photo with the bundled weights, in 4 overlapping tiles: files
    encoded with 1 and 2 torch threads are identical; decoding with 1 or 2 threads (two processes at once) reproduces
    the symbols (else PsicIntegrityError) and gives the same pixels within 1, and the same thread count always the
    same pixels. (Measured on the whole 768x512 photo: 7 to 17 of 1.2 million values differ by 1 between 1 and 2
    or 3 threads.)"""
    source = tmp_path / "in.png"
    kodim07.crop((0, 0, 512, 384)).save(source)
    files = {n: tmp_path / f"t{n}.psic" for n in (1, 2)}
    for p in [child(n, "encode", files[n], source, 256) for n in (1, 2)]:
        finish(p)
    assert files[1].read_bytes() == files[2].read_bytes()
    outputs = {n: tmp_path / f"decoded-{n}.npy" for n in (1, 2)}
    for p in [child(n, "decode", files[1], outputs[n]) for n in (1, 2)]:
        finish(p)
    one, two = (np.load(outputs[n]).astype(int) for n in (1, 2))
    assert one.shape == (384, 512, 3)
    assert np.abs(one - two).max() <= 1


def test_a_different_tiling_still_decodes_exactly_what_it_encoded(kodim07, random_weights):
    image = np.asarray(kodim07.crop((0, 0, 200, 150)))
    for tile in (64, 128, 1024):
        data = psic_core.encode(image, model=random_weights.name, tile=tile)
        f = container.read(data)
        assert len(f.tiles) == f.header.tile_count
        assert psic_core.decode(data, output="numpy").shape == image.shape
