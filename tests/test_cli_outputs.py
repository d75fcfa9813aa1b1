"""What the `psic` command writes, and under which names: default names that never collide with the photo, the
format the extension names, and outputs of demo and eval that are kept unless --force."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cli_fixtures import png, run  # noqa: F401  (fixtures)
from psic_core import codec
from psic_core.cli import EXIT_ERROR, EXIT_USAGE, IMAGE_FORMATS


@pytest.fixture
def psic(capsys, png, random_weights):
    """``photo.psic`` locked with the key ``k``, beside the ``photo.png`` it was encoded from."""
    assert run(capsys, "encode", png, "--model", random_weights.name, "--key", "k")[0] == 0
    return png.with_suffix(".psic")


def test_default_decoding_names_never_collide_with_the_photo(capsys, png, psic):
    photo = png.read_bytes()
    code, out, _ = run(capsys, "decode", psic)
    assert code == 0 and out.startswith(f"{png.parent / 'photo.protected.png'}: protected decoding")
    code, out, _ = run(capsys, "decode", psic, "--key", "k")
    assert code == 0 and out.startswith(f"{png.parent / 'photo.full.png'}: full decoding")
    assert png.read_bytes() == photo
    protected, full = (np.asarray(Image.open(png.parent / f"photo.{kind}.png")) for kind in ("protected", "full"))
    assert not np.array_equal(protected, full)


@pytest.mark.parametrize("suffix", sorted(IMAGE_FORMATS))
def test_decode_writes_the_format_the_extension_names(capsys, psic, suffix):
    out = psic.parent / f"decoded{suffix}"
    assert run(capsys, "decode", psic, "-o", out)[0] == 0
    with Image.open(out) as im:
        assert im.format == IMAGE_FORMATS[suffix] and im.size == (192, 128)


@pytest.mark.parametrize(("mode", "suffix", "written"), [
    ("RGBA", ".jpg", "RGB"), ("LA", ".jpg", "L"),
    ("LA", ".bmp", "RGB"),  # written as 32-bit BGRA, which Pillow reads back without its alpha
])
def test_modes_a_format_cannot_store_are_converted(capsys, photo, random_weights, tmp_path, mode, suffix, written):
    source = photo.convert(mode)
    source.putalpha(Image.linear_gradient("L").resize(photo.size))  # alpha that is kept
    source.save(tmp_path / "photo.png")
    assert run(capsys, "encode", tmp_path / "photo.png", "--model", random_weights.name)[0] == 0
    code, out, _ = run(capsys, "decode", tmp_path / "photo.psic", "-o", tmp_path / f"decoded{suffix}")
    assert code == 0 and out.endswith(f" {mode}\n")  # the decoding's own mode
    with Image.open(tmp_path / f"decoded{suffix}") as im:
        assert im.mode == written


def test_unknown_extensions_are_refused_naming_the_allowed_ones(capsys, png, psic, random_weights, monkeypatch):
    code, _, err = run(capsys, "decode", psic, "-o", psic.parent / "decoded.gif")
    assert code == EXIT_USAGE and err.count("\n") == 1
    assert err.startswith(f"psic: error: cannot write {psic.parent / 'decoded.gif'}: ")
    assert all(suffix in err for suffix in IMAGE_FORMATS)

    def fail_if_encoding(*args, **kwargs):
        raise AssertionError("the output name is checked before encoding")

    monkeypatch.setattr(codec, "encode", fail_if_encoding)
    code, _, err = run(capsys, "encode", png, "-o", png.parent / "encoded.png", "--force")
    assert code == EXIT_USAGE and err.count("\n") == 1 and ".psic" in err
    assert not (psic.parent / "decoded.gif").exists() and not (png.parent / "encoded.png").exists()


@pytest.mark.parametrize("argv", [("decode", "{psic}", "-o", "-"), ("encode", "-"), ("info", "-"),
                                  ("strip", "{psic}", "-o", "-")])
def test_standard_input_and_output_are_refused_in_one_line(capsys, psic, monkeypatch, argv):
    monkeypatch.chdir(psic.parent)
    code, _, err = run(capsys, *(a.format(psic=psic) for a in argv))
    assert code == EXIT_USAGE and err.count("\n") == 1 and "not standard input or output ('-')" in err
    assert not (psic.parent / "-").exists()


def test_demo_keeps_existing_outputs_unless_forced(capsys, tmp_path, random_weights, monkeypatch):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "kodim07.full.png").write_bytes(b"an earlier result")
    real_encode = codec.encode
    monkeypatch.setattr(codec, "encode", lambda *a, **k: pytest.fail("the outputs are checked before encoding"))
    code, _, err = run(capsys, "demo", "--out", out, "--model", random_weights.name)
    assert code == EXIT_ERROR and err == f"psic: error: {out / 'kodim07.full.png'} exists; use --force to replace it\n"
    assert [p.name for p in out.iterdir()] == ["kodim07.full.png"]
    monkeypatch.setattr(codec, "encode", real_encode)
    code, _, _ = run(capsys, "demo", "--out", out, "--model", random_weights.name, "--force")
    assert code == 0 and Image.open(out / "kodim07.full.png").size == (768, 512)


def test_eval_keeps_an_existing_report_unless_forced(capsys, tmp_path, monkeypatch):
    from psic_core.errors import PsicError
    from psic_core.eval import report

    page = tmp_path / "results.md"
    page.write_text("the committed results\n")
    runs = []

    def stop_after_the_checks(args, argv, prog):
        runs.append(argv)
        raise PsicError("stopped by the test")

    monkeypatch.setattr(report, "run", stop_after_the_checks)
    code, _, err = run(capsys, "eval", "--quick", "--out", page)
    assert code == EXIT_ERROR and err == f"psic eval: error: {page} exists; use --force to replace it\n"
    assert runs == [] and page.read_text() == "the committed results\n"
    page.unlink()
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "results.json").write_text("{}")
    assert run(capsys, "eval", "--quick", "--out", page)[0] == EXIT_ERROR and runs == []
    code, _, err = run(capsys, "eval", "--quick", "--out", page, "--force")
    assert len(runs) == 1 and "stopped by the test" in err
