"""The one-run GPU recipe (benchmarks/gpu/train_default.sh) in its CPU smoke mode: the same commands end to end,
on a tiny generated pack, within what the device tool returns."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from psic_core.weights import describe, history, init_training_record, training_record

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu" / "train_default.sh"


@pytest.fixture(scope="module")
def pack(tmp_path_factory, kodim07):
    """The device pack's layout: photos, a captions JSONL and a labels CSV (train rows only)."""
    root = tmp_path_factory.mktemp("pack")
    (root / "wheels").mkdir()
    for folder in ("data/train", "data/captioned", "data/labelled"):
        (root / folder).mkdir(parents=True)
    for i, left in enumerate((0, 200, 400)):
        kodim07.crop((left, 100, left + 96, 196)).save(root / "data/train" / f"{i}.jpg")
        kodim07.crop((left, 200, left + 96, 296)).save(root / "data/captioned" / f"{i}.jpg")
        kodim07.crop((left, 300, left + 96, 396)).save(root / "data/labelled" / f"{i}.jpg")
    with open(root / "data/captioned/captions.jsonl", "w") as f:
        for i, caption in enumerate(("a red house", "a green garden", "a blue sky")):
            f.write(json.dumps({"file": f"{i}.jpg", "caption": caption, "split": "train"}) + "\n")
    with open(root / "data/labelled/labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "label", "source", "split"])
        writer.writeheader()
        for i, label in enumerate(("house", "garden", "house")):
            writer.writerow({"file": f"{i}.jpg", "label": label, "source": "tiny", "split": "train"})
    return root


def test_smoke_mode_trains_every_level_end_to_end(pack, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = dict(os.environ, PSIC_PACK=str(pack), OUT=str(out), WORK=str(work), PYTHON=sys.executable,
               OMP_NUM_THREADS="1")
    result = subprocess.run(["bash", str(SCRIPT), "--smoke"], capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-2000:]
    files = sorted(out.iterdir())
    assert [f.name for f in files] == sorted(f"mshp64{kind}-q{q}.safetensors" for q in range(1, 5)
                                             for kind in ("", "-rd"))
    assert sum(f.stat().st_size for f in files) <= 64 * 2**20
    for q in range(1, 5):
        record = training_record(describe(out / f"mshp64-q{q}.safetensors"))
        assert record["steps"] == [2, 2] and record["init"] == f"mshp64-rd-q{q}"
        chained = record["continues"]  # the rate-distortion run of this recipe, continuing the bundled weights
        assert chained["trainer"] == "psic_core.train.rd" and chained["init"] == f"mshp64-rd-q{q}"
        bundled = history.cumulative(chained["continues"], init_training_record)["rd"]["steps"]
        assert bundled > 0 and chained["cumulative"]["rd"]["steps"] == bundled + 2
        assert set(record["cumulative"]) == {"rd", "stage1", "stage2"}
    summary = result.stdout.strip().splitlines()
    assert summary[-1].startswith("8 files") and sum("steps" in line for line in summary) == 8


def test_a_missing_pack_fails_before_any_work(tmp_path):
    env = dict(os.environ, PSIC_PACK=str(tmp_path / "nowhere"), OUT=str(tmp_path / "out"), PYTHON=sys.executable)
    result = subprocess.run(["bash", str(SCRIPT), "--smoke"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1 and "missing" in result.stderr
    assert not (tmp_path / "out").exists()
