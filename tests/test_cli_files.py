"""How the `psic` command writes files: checked before the work, published without replacing, with the umask's
permissions (psic_core.files)."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from cli_fixtures import png, run  # noqa: F401  (fixtures)
from psic_core import codec
from psic_core.cli import EXIT_ERROR
from psic_core.files import atomic_write


@pytest.fixture
def umask():
    """Set the process umask for one test: ``umask(0o027)``; the previous one is restored afterwards."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_file_created_during_the_encode_is_not_replaced(capsys, png, random_weights, monkeypatch):
    out = png.with_suffix(".psic")
    real_encode = codec.encode

    def encode_while_another_program_writes_the_output(*args, **kwargs):
        data = real_encode(*args, **kwargs)
        out.write_bytes(b"another program's file")
        return data

    monkeypatch.setattr(codec, "encode", encode_while_another_program_writes_the_output)
    code, _, err = run(capsys, "encode", png, "--model", random_weights.name)
    assert code == EXIT_ERROR and err == f"psic: error: {out} exists; use --force to replace it\n"
    assert out.read_bytes() == b"another program's file"
    assert sorted(p.name for p in png.parent.iterdir()) == sorted([out.name, png.name])  # no temporary file left behind
    code, _, _ = run(capsys, "encode", png, "--model", random_weights.name, "--force")
    assert code == 0 and out.read_bytes()[:5] == b"\x89PSIC"


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_every_written_file_gets_the_umask_permissions(capsys, png, random_weights, umask, mask):
    umask(mask)
    expected = 0o666 & ~mask
    psic = png.with_suffix(".psic")
    assert run(capsys, "encode", png, "--model", random_weights.name, "--key", "k")[0] == 0
    assert mode(psic) == expected
    os.chmod(psic, 0o600)  # what --force and strip replace must not be what they keep
    assert run(capsys, "encode", png, "--model", random_weights.name, "--force")[0] == 0
    assert mode(psic) == expected
    os.chmod(psic, 0o600)
    assert run(capsys, "strip", psic)[0] == 0
    assert mode(psic) == expected
    assert run(capsys, "strip", psic, "-o", png.parent / "stripped.psic")[0] == 0
    assert run(capsys, "decode", psic, "-o", png.parent / "decoded.jpg")[0] == 0
    assert run(capsys, "demo", "--out", png.parent / "demo", "--model", random_weights.name)[0] == 0
    written = [png.parent / "stripped.psic", png.parent / "decoded.jpg", *(png.parent / "demo").iterdir()]
    assert {p.name: mode(p) for p in written} == {p.name: expected for p in written}


def fail_if_encoding(*args, **kwargs):
    raise AssertionError("the output location is checked before encoding")


def test_a_missing_or_unusable_output_folder_fails_before_encoding(capsys, png, random_weights, monkeypatch):
    monkeypatch.setattr(codec, "encode", fail_if_encoding)
    missing = png.parent / "missing"
    code, _, err = run(capsys, "encode", png, "-o", missing / "x.psic")
    assert code == EXIT_ERROR and err == f"psic: error: output folder {missing} does not exist\n"
    code, _, err = run(capsys, "encode", png, "-o", png / "x.psic")  # under a file
    assert code == EXIT_ERROR and err == f"psic: error: {png} is not a folder\n"
    folder = png.parent / "named-like-a-file.psic"
    folder.mkdir()
    code, _, err = run(capsys, "encode", png, "-o", folder, "--force")
    assert code == EXIT_ERROR and err == f"psic: error: {folder} is a folder, not a file\n"
    folder.rmdir()
    assert sorted(p.name for p in png.parent.iterdir()) == [png.name]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_fails_before_encoding(capsys, png, random_weights, monkeypatch, tmp_path):
    monkeypatch.setattr(codec, "encode", fail_if_encoding)
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o500)
    code, _, err = run(capsys, "encode", png, "-o", folder / "x.psic")
    assert code == EXIT_ERROR and err == f"psic: error: output folder {folder} is not writable\n"


@pytest.mark.parametrize("replace", [False, True])
def test_without_hard_links_files_are_still_written_and_never_replaced_unasked(tmp_path, monkeypatch, replace):
    def no_hard_links(source, target):
        raise OSError(errno.EPERM, "Operation not permitted")  # what FAT and some network shares answer

    monkeypatch.setattr(os, "link", no_hard_links)
    path = tmp_path / "x.psic"
    assert atomic_write(path, b"first") == path and path.read_bytes() == b"first"
    if replace:
        atomic_write(path, b"second", replace=True)
        assert path.read_bytes() == b"second"
    else:
        with pytest.raises(FileExistsError, match="exists; use --force"):
            atomic_write(path, b"second")
        assert path.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["x.psic"]
