"""The `psic` command line: outputs, exit codes, key sources, no clobbering."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cli_fixtures import png, run  # noqa: F401  (fixtures)
from psic_core.cli import EXIT_ERROR, EXIT_KEY, EXIT_USAGE


def test_encode_decode_info(capsys, png, random_weights):
    code, out, _ = run(capsys, "encode", png, "--model", random_weights.name, "--key", "k")
    assert code == 0 and "locked" in out
    psic = png.with_suffix(".psic")
    code, out, _ = run(capsys, "info", psic, "--json")
    assert code == 0 and json.loads(out)["locked"] is True
    code, out, _ = run(capsys, "decode", psic, "-o", png.parent / "protected.png")
    assert code == 0 and "protected" in out
    code, out, _ = run(capsys, "decode", psic, "--key", "k", "-o", png.parent / "full.png")
    assert code == 0 and "full" in out
    protected, full = (np.asarray(Image.open(png.parent / f"{n}.png")) for n in ("protected", "full"))
    assert protected.shape == full.shape == (128, 192, 3) and not np.array_equal(protected, full)


def test_errors_are_one_line_with_exit_codes(capsys, png, random_weights, tmp_path):
    run(capsys, "encode", png, "--model", random_weights.name, "--key", "k")
    psic = png.with_suffix(".psic")
    code, _, err = run(capsys, "decode", psic, "--key", "wrong", "-o", tmp_path / "o.png")
    assert code == EXIT_KEY and err.count("\n") == 1 and "wrong key" in err
    code, _, err = run(capsys, "decode", psic, "--full", "-o", tmp_path / "o.png")
    assert code == EXIT_KEY and "locked" in err
    code, _, err = run(capsys, "decode", png, "-o", tmp_path / "o.png")
    assert code == EXIT_ERROR and "signature" in err and "Traceback" not in err
    code, _, err = run(capsys, "info", tmp_path / "missing.psic")
    assert code == EXIT_ERROR and err.startswith("psic: error:")
    assert not (tmp_path / "o.png").exists()


def test_never_overwrites_without_force(capsys, png, random_weights):
    run(capsys, "encode", png, "--model", random_weights.name)
    psic = png.with_suffix(".psic")
    before = psic.read_bytes()
    code, _, err = run(capsys, "encode", png, "--model", random_weights.name, "--key", "k")
    assert code == EXIT_ERROR and "--force" in err and psic.read_bytes() == before
    code, _, _ = run(capsys, "encode", png, "--model", random_weights.name, "--key", "k", "--force")
    assert code == 0 and psic.read_bytes() != before
    code, _, err = run(capsys, "decode", psic, "-o", psic, "--force")
    assert code == EXIT_ERROR and "input" in err


def test_key_file_and_environment(capsys, png, random_weights, tmp_path, monkeypatch):
    key_file = tmp_path / "key.txt"
    key_file.write_text("from-a-file\n")
    run(capsys, "encode", png, "--model", random_weights.name, "--key-file", key_file)
    psic = png.with_suffix(".psic")
    code, _, _ = run(capsys, "decode", psic, "--key", "from-a-file", "-o", tmp_path / "a.png")
    assert code == 0
    monkeypatch.setenv("PSIC_KEY", "from-a-file")
    code, _, _ = run(capsys, "decode", psic, "--key-env", "-o", tmp_path / "b.png")
    assert code == 0
    monkeypatch.delenv("PSIC_KEY")
    code, _, err = run(capsys, "decode", psic, "--key-env", "-o", tmp_path / "c.png")
    assert code == EXIT_KEY and "PSIC_KEY" in err


def test_demo_writes_both_decodings(capsys, tmp_path, random_weights):
    code, out, _ = run(capsys, "demo", "--out", tmp_path / "demo", "--model", random_weights.name)
    assert code == 0 and "PSNR" in out and "bpp" in out
    names = {p.name for p in (tmp_path / "demo").iterdir()}
    assert {"kodim07.psic", "kodim07.protected.png", "kodim07.full.png", "kodim07.side-by-side.png"} <= names
    assert Image.open(tmp_path / "demo" / "kodim07.side-by-side.png").width > 3 * 768


def test_the_installed_command_adds_plugins_and_keeps_the_core_commands(capsys, png, random_weights):
    from psic_plugins.cli import main as installed_main

    assert installed_main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "psic.pillow" in out and "image libraries: imageio, pillow" in out
    assert installed_main(["encode", str(png), "--model", random_weights.name]) == 0


def test_decode_takes_the_weights_a_file_needs_by_option_or_search_path(capsys, png, tmp_path, monkeypatch):
    from weights_fixtures import random_codec_weights

    folder = tmp_path / "not-installed"
    folder.mkdir()
    weights = random_codec_weights(folder / "elsewhere.safetensors", name="psic-test-elsewhere", seed=3)
    assert run(capsys, "encode", png, "--model", weights)[0] == 0
    psic = png.with_suffix(".psic")
    code, _, err = run(capsys, "decode", psic)
    assert code == EXIT_ERROR and err.count("\n") == 1 and "psic-test-elsewhere" in err
    assert "PSIC_WEIGHTS_PATH" in err and "psic decode --model PATH" in err
    code, out, _ = run(capsys, "decode", psic, "--model", weights)
    assert code == 0 and "protected decoding" in out
    monkeypatch.setenv("PSIC_WEIGHTS_PATH", str(folder))
    code, _, _ = run(capsys, "decode", psic, "-o", tmp_path / "found.png")
    assert code == 0 and (tmp_path / "found.png").is_file()


def test_usage_errors_are_one_line_with_exit_code_2(capsys, png):
    for argv in (["decode"], ["encode", png, "--quality", "high"], ["decode", png, "--colour"], ["frobnicate"]):
        code, _, err = run(capsys, *argv)
        assert code == EXIT_USAGE and err.count("\n") == 1 and err.startswith("psic: error: "), argv


def test_a_decompression_bomb_is_one_error_line(capsys, png, random_weights, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 192 * 128 // 3)  # the photo is over twice the limit
    code, _, err = run(capsys, "encode", png, "--model", random_weights.name)
    assert code == EXIT_ERROR and err.count("\n") == 1 and err.startswith("psic: error: ")
    assert "MAX_IMAGE_PIXELS" in err and not png.with_suffix(".psic").exists()
