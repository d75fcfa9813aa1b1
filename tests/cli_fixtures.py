"""Fixtures and helpers shared by the tests/test_cli*.py modules (each imports the ones it uses)."""

from __future__ import annotations

import pytest

from psic_core.cli import main


@pytest.fixture
def png(tmp_path, photo):
    """conftest's photo as ``photo.png`` in a fresh folder."""
    path = tmp_path / "photo.png"
    photo.save(path)
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    """``psic *argv`` in this process: exit code, stdout, stderr (argparse's exit is returned as its code)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err
