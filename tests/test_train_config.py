"""The trainers' settings are checked before any work: typed values, allowed values named, unknown keys refused with
the known ones, and output folders created (psic_core.train.config; the VLP trainer's options too)."""

from __future__ import annotations

import pytest

from psic_core.train.config import check_ready, load_config
from psic_core.vlp import train as vlp_train


@pytest.fixture
def labels(tmp_path):
    """A labels CSV (check_ready only needs it to exist)."""
    path = tmp_path / "labels.csv"
    path.write_text("file,label,split\n0.png,disc,train\n")
    return path


@pytest.mark.parametrize("override, allowed", [
    ("train.minutes=0.05", "train.minutes must be a list of 2 values, one per stage in train.stages [1, 2], each "
                           "a number > 0 (e.g. [10.0, 40.0]), not 0.05"),
    ("train.lr=[1e-4]", "train.lr must be a list of 2 values"),
    ("train.max_steps=[10, 2.5]", "each an integer >= 0"),
    ("train.stages=[3]", "train.stages must be one of [1], [2], [1, 2], not [3]"),
    ("train.stages=[True]", "train.stages must be one of"),
    ("train.crop=100", "train.crop must be a multiple of 64"),
    ("train.batch=0", "train.batch must be an integer >= 1, not 0"),
    ("train.batch=2.5", "train.batch must be an integer >= 1, not 2.5"),
    ("train.lmbda=-1", "train.lmbda must be a number > 0"),
    ("train.threshold=2", 'train.threshold must be "median" or a number in (0, 1], not 2'),
    ("train.confident=sideways", "train.confident must be one of cosine, centred, not 'sideways'"),
    ("train.label_candidates=all", "train.label_candidates must be one of batch, source"),
    ("train.split_by=rank", "train.split_by must be one of uncertainty, correct, not 'rank'"),
    ("train.uncertain_targets=argmin", "train.uncertain_targets must be one of soft, hard, not 'argmin'"),
    ("train.weighting=equal", "train.weighting must be one of detached, harmonic, not 'equal'"),
    ("train.targeted=-1", "train.targeted must be a number >= 0, not -1"),
    ("train.targeted_class=random", "train.targeted_class must be one of least_likely, likeliest_wrong, not 'random'"),
    ("train.looks=-0.5", "train.looks must be a number >= 0, not -0.5"),
    ("train.batching=random", "train.batching must be one of mixed, source"),
    ("train.device=gpu", "train.device must be auto, cpu, cuda or cuda:N"),
    ("model.cltg_scales=yes", "model.cltg_scales must be true or false, not 'yes'"),
])
def test_wrongly_typed_values_are_refused_naming_what_is_allowed(override, allowed):
    with pytest.raises(ValueError) as error:
        load_config(None, [override])
    assert allowed in str(error.value)


def test_values_from_the_toml_file_are_checked_as_overrides_are(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("[train]\nminutes = 5\n")
    with pytest.raises(ValueError, match="train.minutes must be a list of 2 values"):
        load_config(str(toml), [])
    toml.write_text("[data]\nsplit = 1\n")
    with pytest.raises(ValueError, match="data.split must be a string, not 1"):
        load_config(str(toml), [])
    toml.write_text("train = 3\n")
    with pytest.raises(ValueError, match=r"train must be a \[train\] table"):
        load_config(str(toml), [])
    toml.write_text("[train\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(str(toml), [])


def test_unknown_keys_and_sections_are_refused_with_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config keys: train\.lamda \(known in \[train\]: .*\blmbda\b"):
        load_config(None, ["train.lamda=1"])
    toml = tmp_path / "c.toml"
    toml.write_text("[output]\nfile = 'x'\n")
    with pytest.raises(ValueError, match=r"unknown config keys: output\.file \(known in \[output\]: out, name, "):
        load_config(str(toml), [])
    with pytest.raises(ValueError, match=r"unknown section 'trian' \(known: data, model, vlp, train, output\)"):
        load_config(None, ["trian.lmbda=1"])
    toml.write_text("[trian]\nlmbda = 1\n")
    with pytest.raises(ValueError, match=r"unknown section \[trian\] \(known: data, model, vlp, train, output\)"):
        load_config(str(toml), [])


def test_per_stage_values_default_to_the_listed_stages_own():
    config = load_config(None, ["train.stages=[2]"])["train"]
    assert config["minutes"] == [40.0] and config["beta"] == [1.0] and config["lr"] == [1e-4]
    with pytest.raises(ValueError, match=r"train.beta must be a list of 1 values, one per stage in train.stages \[2\]"):
        load_config(None, ["train.stages=[2]", "train.beta=[0.1, 1.0]"])


def test_override_text_is_typed_by_the_key():
    config = load_config(None, ["output.name=2", "output.quality=2", "model.cltg_scales=true", "train.lmbda=1",
                                'vlp.name="open_clip:ViT-B-32"', "train.threshold=0.5"])
    assert config["output"]["name"] == "2" and config["output"]["quality"] == 2
    assert config["model"]["cltg_scales"] is True and config["train"]["lmbda"] == 1.0
    assert config["vlp"]["name"] == "open_clip:ViT-B-32" and config["train"]["threshold"] == 0.5


def test_psic_loss_options_default_to_the_original_loss_and_the_correct_split_takes_no_threshold():
    config = load_config(None, [])["train"]
    assert (config["split_by"], config["uncertain_targets"], config["weighting"]) == ("uncertainty", "soft", "detached")
    assert config["targeted"] == 0.0 and config["looks"] == 0.0 and config["targeted_class"] == "least_likely"
    official = load_config(None, ["train.split_by=correct", "train.uncertain_targets=hard", "train.weighting=harmonic",
                                  "train.gamma=0", "train.targeted=0.5", "train.looks=2"])["train"]
    assert official["split_by"] == "correct" and official["gamma"] == 0.0 and official["looks"] == 2.0
    with pytest.raises(ValueError, match='train.threshold applies to train.split_by = "uncertainty" only; with '
                                         '"correct" leave it unset, not 0.5'):
        load_config(None, ["train.split_by=correct", "train.threshold=0.5"])


def test_output_folders_are_created_before_training(labels, tmp_path):
    outputs = {"out": tmp_path / "w" / "q2.safetensors", "checkpoint": tmp_path / "c" / "q2.ckpt",
               "log": tmp_path / "logs" / "deep" / "q2.csv"}
    check_ready(load_config(None, [f"data.labels={labels}"] + [f"output.{k}={v}" for k, v in outputs.items()]))
    assert all(path.parent.is_dir() and not path.exists() for path in outputs.values())


def test_vlp_trainer_checks_its_options_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit):
        vlp_train.main(["--data", str(tmp_path), "--out", str(tmp_path / "v.safetensors"), "--batch", "1"])
    assert "argument --batch: must be an integer >= 2, not '1'" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="--data must be the folder holding labelled/ and captioned/"):
        vlp_train.main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "v.safetensors")])
    for name, header in (("labelled/labels.csv", "file,label,source,split\n"), ("captioned/captions.jsonl", "")):
        (tmp_path / name).parent.mkdir()
        (tmp_path / name).write_text(header)
    with pytest.raises(ValueError, match="no training pairs"):
        vlp_train.main(["--data", str(tmp_path), "--out", str(tmp_path / "v.safetensors")])
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    (tmp_path / "labelled/labels.csv").write_text("file,label,source,split\n0.png,disc,toys,train\n")
    with pytest.raises(OSError, match="cannot create the folder of output"):  # before the images are read
        vlp_train.main(["--data", str(tmp_path), "--out", str(blocker / "v.safetensors")])
