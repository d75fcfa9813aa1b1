"""Replays the fuzzing seed corpus and every crasher ever found (as Pillow's test_fuzzers does)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
sys.path.insert(0, str(FUZZ))

import targets  # noqa: E402

CASES = sorted((FUZZ / "corpus").glob("*.psic")) + sorted((FUZZ / "crashers").glob("crash-*"))


def test_the_corpus_is_there():
    assert len(list((FUZZ / "corpus").glob("*.psic"))) >= 8


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_replay(path):
    targets.run_all(path.read_bytes())
