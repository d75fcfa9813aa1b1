"""The trainers' and the evaluation's entry points: settings checked before any work, errors in one line (the CLI's
error handling, also for the ``python -m`` trainers), and the extra to install named when it is missing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from missing_modules import run_python
from psic_core import cli
from psic_core.train import privacy, rd
from psic_core.train.config import load_config


@pytest.fixture
def labels(tmp_path):
    """A labels CSV (the checks before training only need it to exist)."""
    path = tmp_path / "labels.csv"
    path.write_text("file,label,split\n0.png,disc,train\n")
    return path


def test_psic_train_reports_a_bad_value_in_one_line(capsys):
    assert cli.main(["train", "--set", "train.minutes=0.05"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("psic: error: train.minutes must be a list of 2 values") and err.count("\n") == 1


def test_missing_inputs_fail_before_any_work(labels, tmp_path, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("training data was read before the config was checked")

    monkeypatch.setattr(privacy, "read_labels", no_work)
    with pytest.raises(ValueError, match="no training pairs: set data.captions"):
        privacy.train(load_config(None, []))
    with pytest.raises(FileNotFoundError, match="data.labels: no file"):
        privacy.train(load_config(None, [f"data.labels={tmp_path / 'missing.csv'}"]))
    with pytest.raises(LookupError, match="no weights named no-such-weights"):
        privacy.train(load_config(None, [f"data.labels={labels}", "model.init=no-such-weights"]))
    with pytest.raises(ValueError, match="model.backbone must be one of .*mean-scale-hyperprior"):
        privacy.train(load_config(None, [f"data.labels={labels}", "model.backbone=nope"]))
    with pytest.raises(ValueError, match="train.photo_batch needs data.images"):
        privacy.train(load_config(None, [f"data.labels={labels}", "train.photo_batch=2"]))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OSError, match="cannot create the folder of output"):
        privacy.train(load_config(None, [f"data.labels={labels}", f"output.log={blocker / 'run' / 'log.csv'}"]))
    with pytest.raises(IsADirectoryError, match="is a folder; give a file name"):
        privacy.train(load_config(None, [f"data.labels={labels}", f"output.out={tmp_path}"]))


@pytest.fixture(scope="module")
def photos(tmp_path_factory, kodim07):
    folder = tmp_path_factory.mktemp("photos")
    kodim07.crop((0, 0, 128, 128)).save(folder / "0.png")
    return folder


def rd_argv(photos, out, *extra):
    return ["--data", str(photos), "--lmbda", "0.01", "--name", "cfg-q1", "--N", "32", "--M", "48", "--batch", "1",
            "--crop", "64", "--threads", "1", "--max-steps", "1", "--out", str(out), *extra]


def test_rd_trainer_creates_its_output_folders(photos, tmp_path):
    out, log = tmp_path / "new" / "out.safetensors", tmp_path / "logs" / "rd.csv"
    rd.main(rd_argv(photos, out, "--log", str(log)))
    assert out.is_file() and log.is_file()


@pytest.mark.parametrize("option, value, allowed", [
    ("--minutes", "0", "must be a number > 0, not '0'"),
    ("--crop", "100", "must be a multiple of 64 (at least 64), not '100'"),
    ("--batch", "x", "must be an integer >= 1, not 'x'"),
])
def test_rd_trainer_refuses_out_of_range_options(photos, tmp_path, capsys, option, value, allowed):
    with pytest.raises(SystemExit) as stop:
        rd.main(rd_argv(photos, tmp_path / "out.safetensors", option, value))
    assert stop.value.code == 2 and f"argument {option}: {allowed}" in capsys.readouterr().err


def test_rd_trainer_checks_its_outputs_before_reading_the_data(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OSError, match="cannot create the folder of output"):
        rd.main(rd_argv(tmp_path / "no-photos", blocker / "out.safetensors"))


def test_module_entry_points_end_errors_in_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "psic_core.train.rd", "--data", str(tmp_path / "missing"),
                          "--lmbda", "0.01", "--name", "x", "--out", str(tmp_path / "x.safetensors")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == cli.EXIT_ERROR
    assert run.stderr == f"python -m psic_core.train.rd: error: training data folder {tmp_path / 'missing'} " \
                         "does not exist\n"


def test_training_and_evaluation_name_the_extra_they_need(tmp_path):
    (tmp_path / "labels.csv").write_text("file,label,split\n0.png,disc,train\n")
    for name, text in (("labelled/labels.csv", "file,label,source,split\n0.png,disc,toys,train\n"),
                       ("captioned/captions.jsonl", "")):  # a VLP training set, as far as its indexes go
        (tmp_path / name).parent.mkdir()
        (tmp_path / name).write_text(text)
    result = run_python("""
        import contextlib, io, json, runpy
        from pathlib import Path
        from psic_core import cli
        from psic_core.vlp import load_vlp  # importing the VLP package needs no open_clip; building a model does
        from psic_core.weights import registry
        from weights_fixtures import random_codec_weights

        def run(command):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                try:
                    code = command()
                except SystemExit as stop:
                    code = stop.code
            return [code, err.getvalue()]

        def vlp_trainer():
            sys.argv = ["x", "--data", ".", "--out", "v.safetensors"]
            runpy.run_module("psic_core.vlp.train", run_name="__main__")

        print(json.dumps({
            "train": run(lambda: cli.main(["train", "--set", "data.labels=labels.csv"])),
            "eval": run(lambda: cli.main(["eval", "--data", ".", "--out", "r.md"])),
            "vlp": run(lambda: cli.run_command(load_vlp)),
            "vlp_train": run(vlp_trainer),
            # the demo codes with psic alone; the reference VLP's reading is left out without the extra
            "demo": run(lambda: cli.main(["demo", "--out", "demo", "--model", registry.register(
                random_codec_weights(Path("w.safetensors"), name="entry-test")).name])),
        }))
    """, ("open_clip",), tmp_path)
    missing = "(open_clip is not installed): pip install 'psic[{}]'\n"
    assert result["train"] == [1, "psic: error: psic train needs the 'train' extra " + missing.format("train")]
    assert result["eval"] == [2, "psic eval: error: psic eval needs the 'eval' extra " + missing.format("eval")]
    assert result["vlp"] == [1, "psic: error: a target VLP (open_clip) needs the 'train' extra "
                             + missing.format("train")]
    assert result["vlp_train"][0] == 1 and result["vlp_train"][1].count("\n") == 1
    assert result["vlp_train"][1].endswith("pip install 'psic[train]'\n")
    assert result["demo"] == [0, ""] and (tmp_path / "demo" / "kodim07.side-by-side.png").is_file()
