"""Decoding from 8 threads at once through both libraries gives identical results; unlocked() stays per thread."""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

import imageio.v3 as iio
import numpy as np
from PIL import Image

import psic_plugins
from plugins_fixtures import KEY, crop, samples  # noqa: F401  (fixtures: samples needs crop)

THREADS = 8


def run_together(task, count=THREADS):
    """``task(i)`` for i in range(count), all started at once (a barrier), results in order."""
    barrier = threading.Barrier(count)

    def start(i):
        barrier.wait()
        return task(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(start, range(count)))


def test_eight_threads_decode_identically_through_pillow_and_imageio(samples):
    sample = samples["locked"]

    def decode(i):
        # even threads ask for the full image, odd ones for the protected one; half through each library
        key = KEY if i % 2 == 0 else None
        if i % 4 < 2:
            im = Image.open(sample.path)
            return np.asarray(im.unlock(key) if key else im)
        return iio.imread(sample.path, key=key)

    for i, result in enumerate(run_together(decode)):
        np.testing.assert_array_equal(result, sample.full if i % 2 == 0 else sample.protected)


def test_an_unlocked_block_in_one_thread_is_invisible_to_the_others(samples):
    sample = samples["locked"]
    entered, opened = threading.Barrier(THREADS), threading.Barrier(THREADS)

    def decode(i):
        with psic_plugins.unlocked(KEY) if i % 2 == 0 else contextlib.nullcontext():
            entered.wait()  # every even thread is inside its block
            im = Image.open(sample.path)
            opened.wait()  # and stays there until every thread has opened its image
        return np.asarray(im)

    for i, result in enumerate(run_together(decode)):
        np.testing.assert_array_equal(result, sample.full if i % 2 == 0 else sample.protected)
