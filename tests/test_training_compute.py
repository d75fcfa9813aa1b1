"""Device, precision and memory format of the trainers (train/device.py), run on the CPU, and the training history
every export carries (weights/history.py)."""

from __future__ import annotations

import pytest
import torch

from psic_core.models import build_backbone
from psic_core.train import rd
from psic_core.train.device import Compute, resolve_device
from psic_core.train.losses import rate_distortion
from psic_core.weights import base_init, describe, history, training_record


@pytest.fixture(scope="module")
def photos(tmp_path_factory, kodim07):
    folder = tmp_path_factory.mktemp("photos")
    for i, left in enumerate((0, 300)):
        kodim07.crop((left, 100, left + 160, 260)).save(folder / f"{i}.png")
    return folder


def train_rd(photos, out, *extra):
    rd.main(["--data", str(photos), "--lmbda", "0.01", "--name", "compute-q1", "--N", "32", "--M", "48",
             "--batch", "2", "--crop", "64", "--threads", "1", "--out", str(out), *extra])
    return out


def test_unknown_devices_and_precisions_are_refused_naming_the_allowed_ones():
    with pytest.raises(ValueError, match="auto, cpu, cuda, cuda:N"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="fp32, bf16"):
        Compute.create("cpu", "fp8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_bf16_autocast_keeps_the_entropy_models_in_float32():
    torch.manual_seed(0)
    model = build_backbone("mean-scale-hyperprior", N=32, M=48).train()
    x = torch.rand(2, 3, 64, 64)
    fp32 = rate_distortion(model(x), x, 0.01)
    compute = Compute.create("cpu", "bf16", channels_last=True)
    model = compute.model(model)
    with compute.autocast():
        out = model(compute.batch(x))
    assert out["x_hat"]["full"].dtype == torch.bfloat16  # the synthesis ran in bf16
    assert all(l.dtype == torch.float32 for l in out["likelihoods"].values())
    bf16 = rate_distortion(out, x, 0.01)
    assert bf16["bpp"].dtype == torch.float32
    # bf16 transforms move the latent a little; likelihoods computed in bf16 would be off by far more
    assert abs(bf16["bpp"].item() - fp32["bpp"].item()) < 0.05 * fp32["bpp"].item()


def test_rd_training_in_bf16_channels_last_exports_float32_contiguous_weights(photos, tmp_path):
    out = train_rd(photos, tmp_path / "bf16.safetensors", "--max-steps", "2", "--precision", "bf16",
                   "--channels-last", "--device", "cpu")
    from safetensors.torch import load_file

    tensors = load_file(str(out))
    assert all(t.dtype in (torch.float32, torch.int32) for t in tensors.values())
    record = training_record(describe(out))
    assert record["compute"] | {"threads": 1} == {"device": "cpu", "device_name": "cpu", "precision": "bf16",
                                                  "channels_last": True, "compile": False, "threads": 1}
    assert record["cumulative"]["rd"]["steps"] == 2


def test_training_accumulates_across_exported_weights(photos, tmp_path):
    first = train_rd(photos, tmp_path / "first.safetensors", "--max-steps", "2")
    second = train_rd(photos, tmp_path / "second.safetensors", "--max-steps", "3", "--init", str(first))
    record = training_record(describe(second))
    first_record = training_record(describe(first))
    assert record["continues"] == first_record
    assert record["cumulative"]["rd"]["steps"] == 5
    assert record["cumulative"]["rd"]["seconds"] == pytest.approx(first_record["seconds"] + record["seconds"],
                                                                  abs=0.2)
    assert [run["steps"] for run in history.chain(record)] == [2, 3]


def test_records_written_before_the_totals_are_read_from_their_budgets():
    rd_record = {"script": "psic_core.train.rd", "steps": 2000, "init": None}
    psic = {"trainer": "psic_core.train.privacy", "steps": [700, 2300], "init": "x-rd-q1",
            "train": {"stages": [1, 2], "minutes": [20.0, 25.0]}}
    continued = {"trainer": "psic_core.train.privacy", "steps": [1300], "init": "x-q1", "continues": psic,
                 "train": {"stages": [2], "minutes": [8.0]}}
    totals = history.cumulative(continued, lookup=lambda record: rd_record if record["init"] == "x-rd-q1" else None)
    assert totals == {"rd": {"steps": 2000, "seconds": 0.0, "untimed": 1},
                      "stage1": {"steps": 700, "seconds": 1200.0, "untimed": 0},
                      "stage2": {"steps": 3600, "seconds": 1980.0, "untimed": 0}}
    assert base_init(continued) == "x-rd-q1"


def test_a_new_record_extends_the_totals_of_the_one_it_continues():
    # the previous weights continued others that are not at hand: their stored totals stand in for that history
    previous = {"trainer": "psic_core.train.rd", "steps": 10, "seconds": 5.0, "init": "gone-q1",
                "cumulative": {"rd": {"steps": 110, "seconds": 55.0}}}
    run = {"trainer": "psic_core.train.privacy", "steps": [4, 6], "seconds": [2.0, 3.0],
           "train": {"stages": [1, 2]}}
    record = history.extend(previous, run)
    assert record["continues"] is previous
    assert record["cumulative"] == {"rd": {"steps": 110, "seconds": 55.0, "untimed": 0},
                                    "stage1": {"steps": 4, "seconds": 2.0, "untimed": 0},
                                    "stage2": {"steps": 6, "seconds": 3.0, "untimed": 0}}
    assert history.cumulative(record) == record["cumulative"]


def test_totals_are_recomputed_from_the_chain_and_count_untimed_runs():
    first = {"trainer": "psic_core.train.rd", "steps": 100, "init": None}  # an early record: no time kept
    second = history.extend(first, {"trainer": "psic_core.train.rd", "steps": 50, "seconds": 60.0, "init": "a"})
    assert history.cumulative(second)["rd"] == {"steps": 150, "seconds": 60.0, "untimed": 1}


def test_psic_models_verbose_shows_the_accumulated_chain(photos, tmp_path, monkeypatch, capsys):
    from psic_core import cli

    (tmp_path / "w").mkdir()
    first = train_rd(photos, tmp_path / "first.safetensors", "--max-steps", "2")
    train_rd(photos, tmp_path / "w" / "chain-q1.safetensors", "--max-steps", "3", "--init", str(first),
             "--name", "chain-q1")
    monkeypatch.setenv("PSIC_WEIGHTS_PATH", str(tmp_path / "w"))
    capsys.readouterr()
    assert cli.main(["models", "--verbose"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("chain-q1"):].splitlines()
    assert block[1].split()[:3] == ["rd", "5", "steps"]
    assert [line.split()[3] for line in block[2:4]] == ["2", "3"] and " on cpu" in block[3]


def test_auto_precision_is_bf16_only_where_the_hardware_computes_it(monkeypatch):
    from psic_core.train import device

    monkeypatch.setattr(device, "native_bf16", lambda _: True)
    assert Compute.create("cpu", "auto").precision == "bf16"
    monkeypatch.setattr(device, "native_bf16", lambda _: False)
    assert Compute.create("cpu", "auto").precision == "fp32"
    assert Compute.create("cpu", "bf16").precision == "bf16"  # asked for explicitly: honoured (emulated, slower)
