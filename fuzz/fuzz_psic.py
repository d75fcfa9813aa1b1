"""Coverage-guided fuzzing of psic's parsers and decoders with atheris.

    pip install atheris
    OMP_WAIT_POLICY=PASSIVE python fuzz/fuzz_psic.py fuzz/corpus -runs=100000 -artifact_prefix=fuzz/crashers/

Crashers land in fuzz/crashers/; commit them: tests/test_fuzz_replay.py replays the corpus and every crasher.
"""

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["psic_core", "psic_plugins"]):
    import targets


def test_one_input(data: bytes) -> None:
    targets.run_all(data)


def warm_up() -> None:
    """Load torch and the corpus' models once, so libFuzzer does not report the first decode as a slow unit."""
    for path in (Path(__file__).parent / "corpus").glob("*.psic"):
        targets.run_all(path.read_bytes())


if __name__ == "__main__":
    warm_up()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
