"""Run Python code in a fresh interpreter in which some packages act as if they were not installed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent

BLOCKER = textwrap.dedent('''
    import importlib.abc, sys
    attempted = []

    class Missing(importlib.abc.MetaPathFinder):
        """Acts as if the BLOCKED packages were not installed, and records the imports of them that were tried."""
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                attempted.append(name)
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, Missing())
    sys.path.insert(0, TESTS)
''')


def run_python(code: str, blocked, cwd) -> dict:
    """Run ``code`` in ``cwd`` with the packages ``blocked`` missing (the list ``attempted`` names the imports of
    them that were tried); ``code`` prints one JSON object as its last line, which is returned."""
    script = f"BLOCKED = {tuple(blocked)!r}\nTESTS = {str(TESTS)!r}\n" + BLOCKER + textwrap.dedent(code)
    run = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=300,
                         env={"PSIC_DISABLE_PLUGIN_AUTOLOAD": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])
