"""Packaging: what pyproject.toml declares matches what the code imports, decoding needs none of the training stack,
and commands that need an extra say which one to install."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from missing_modules import run_python
from psic_core.extras import EXTRAS

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SOURCES = sorted((ROOT / "src").rglob("*.py"))
#: the VLP and training stack, which decoding must never import
TRAINING_STACK = ("open_clip", "timm", "huggingface_hub")


def names(requirements: list[str]) -> set[str]:
    return {re.sub(r"[-_.]+", "-", Requirement(r).name).lower() for r in requirements}


def imported_modules() -> set[str]:
    """Top-level modules that src/ imports (absolute imports only: relative ones are psic's own)."""
    modules = set()
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.partition(".")[0])
    return modules


def test_requires_python_admits_no_interpreter_without_the_standard_library_the_code_uses():
    supported = SpecifierSet(PROJECT["requires-python"])
    assert "tomllib" in imported_modules()  # new in Python 3.11
    assert "3.10" not in supported and "3.11" in supported
    versions = [c.rpartition(" :: ")[2] for c in PROJECT["classifiers"] if re.fullmatch(r".*Python :: 3\.\d+", c)]
    assert versions and all(v in supported for v in versions)


def test_the_mit_licence_ships_and_is_not_also_a_classifier():
    text = (ROOT / "LICENSE").read_text()
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    assert text.startswith("MIT License") and "the psic authors" in text
    assert not any(c.startswith("License ::") for c in PROJECT["classifiers"])  # PEP 639: the expression says it


def test_every_imported_distribution_is_declared():
    stdlib = sys.stdlib_module_names | {"psic_core", "psic_plugins"}
    providers = importlib.metadata.packages_distributions()
    declared = names(PROJECT["dependencies"]).union(*map(names, PROJECT["optional-dependencies"].values()))
    undeclared = {module: providers.get(module) for module in imported_modules() - stdlib
                  if not names(providers.get(module, [module])) & declared}
    assert not undeclared


def test_the_extras_table_matches_pyproject_and_the_test_extra_installs_them_all():
    extras = PROJECT["optional-dependencies"]
    for extra, modules in EXTRAS.items():
        assert names(extras[extra]) == names(list(modules))
    assert names(extras["test"]) >= set().union(*(names(list(m)) for m in EXTRAS.values())) | {"pytest"}
    assert not names(PROJECT["dependencies"]) & names(extras["train"])  # decoding does not install the VLP stack


def test_the_decode_path_imports_none_of_the_training_stack(tmp_path):
    result = run_python("""
        import json
        import numpy as np
        from weights_fixtures import random_codec_weights

        import psic_core, psic_plugins
        from psic_core.weights import registry
        registry.register(random_codec_weights(__import__("pathlib").Path("w.safetensors"), name="pkg-test"))
        image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
        data = psic_core.encode(image, model="pkg-test", key="k")
        open("x.psic", "wb").write(data)
        decodings = [psic_core.decode(data), psic_core.decode(data, key="k"), psic_core.info(data)]

        from PIL import Image
        import imageio.v3 as iio
        with Image.open("x.psic") as im:
            im.load()
        full = iio.imread("x.psic", key="k")
        loaded = sorted({m.partition(".")[0] for m in sys.modules} & set(BLOCKED))
        print(json.dumps({"attempted": attempted, "loaded": loaded, "size": [im.size, list(full.shape)]}))
    """, TRAINING_STACK, tmp_path)
    assert result == {"attempted": [], "loaded": [], "size": [[64, 48], [48, 64, 3]]}


def test_a_target_vlp_names_the_extra_it_needs(tmp_path):
    result = run_python("""
        import json
        from psic_core.extras import MissingExtraError
        from psic_core.vlp import load_vlp  # importing the VLP package needs no open_clip; building a model does

        try:
            load_vlp()
        except MissingExtraError as exc:
            print(json.dumps({"error": str(exc), "import_error": isinstance(exc, ImportError)}))
    """, ("open_clip",), tmp_path)
    assert result == {"error": "a target VLP (open_clip) needs the 'train' extra (open_clip is not installed): "
                               "pip install 'psic[train]'", "import_error": True}
