"""The rate-distortion trainer (psic_core.train.rd): export, resume from its checkpoint, start from trained weights."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from safetensors.torch import load_file

from psic_core.train import rd
from psic_core.weights import describe
from weights_fixtures import random_codec_weights


@pytest.fixture(scope="module")
def photos(tmp_path_factory, kodim07):
    """Three 160x160 crops of the bundled photo (the trainer cuts random 64 px crops from them)."""
    folder = tmp_path_factory.mktemp("photos")
    for i, left in enumerate((0, 200, 400)):
        kodim07.crop((left, 100, left + 160, 260)).save(folder / f"{i}.png")
    return folder


def run(photos, tmp_path, *extra):
    tmp_path.mkdir(exist_ok=True)
    argv = ["--data", str(photos), "--lmbda", "0.01", "--name", "rdtest-q1", "--quality", "1",
            "--N", "32", "--M", "48", "--batch", "2", "--crop", "64", "--threads", "1",
            "--out", str(tmp_path / "out.safetensors"), *extra]
    rd.main(argv)
    return tmp_path / "out.safetensors"


def test_export_carries_the_training_record(photos, tmp_path):
    out = run(photos, tmp_path, "--max-steps", "3", "--log", str(tmp_path / "log.csv"))
    info = describe(out)
    assert info.name == "rdtest-q1" and info.quality == 1 and (info.config["N"], info.config["M"]) == (32, 48)
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(float(r["bpp"]) > 0 for r in rows)


def test_rerunning_resumes_from_the_checkpoint(photos, tmp_path):
    checkpoint = tmp_path / "run.ckpt"
    run(photos, tmp_path, "--max-steps", "2", "--checkpoint", str(checkpoint), "--log", str(tmp_path / "log.csv"))
    run(photos, tmp_path, "--max-steps", "4", "--checkpoint", str(checkpoint), "--log", str(tmp_path / "log.csv"))
    with open(tmp_path / "log.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == [1, 2, 3, 4]


def test_init_starts_from_trained_weights(photos, tmp_path):
    start = random_codec_weights(tmp_path / "start.safetensors", name="start-q1", seed=3)
    unchanged = run(photos, tmp_path / "zero", "--init", str(start), "--max-steps", "0")
    before, after = load_file(str(start)), load_file(str(unchanged))
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k].numpy(), after[k].numpy()) for k in before)

    trained = run(photos, tmp_path / "two", "--init", str(start), "--max-steps", "2", "--backbone", "scale-hyperprior")
    info = describe(trained)
    assert info.backbone == "mean-scale-hyperprior"  # the init's architecture wins over --backbone
    assert '"init": "start-q1"' in info.metadata["psic.training"]
    weights = load_file(str(trained))
    assert not all(np.array_equal(before[k].numpy(), weights[k].numpy()) for k in before)


def test_init_rejects_unknown_weights(photos, tmp_path):
    with pytest.raises(LookupError, match="no weights named"):
        run(photos, tmp_path, "--init", "no-such-weights-q9", "--max-steps", "1")
