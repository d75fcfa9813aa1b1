"""The ``python`` examples of docs/plugins.md run as written, in order, in one fresh interpreter."""

from __future__ import annotations

import re
from pathlib import Path

from plugins_fixtures import crop, run_python  # noqa: F401  (fixtures)
from weights_fixtures import random_codec_weights

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def test_the_plugin_guide_examples_run(crop, random_weights, tmp_path):
    """In a folder with a photo.jpg, and with throw-away weights under the default name the examples rely on."""
    weights = tmp_path / "weights"
    weights.mkdir()
    random_codec_weights(weights / "mshp64-q2.safetensors", name="mshp64-q2", quality=2)
    work = tmp_path / "work"
    work.mkdir()
    crop.save(work / "photo.jpg", quality=95)
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)
    assert len(blocks) >= 6
    script = "import os\nos.chdir(%r)\n" % str(work) + "\n".join(blocks)
    out = run_python(script, random_weights, PSIC_WEIGHTS_PATH=str(weights), PSIC_KEY=None)
    assert "my-app.keys None psic_key_for" in out
    for name in ("photo.psic", "protected.png", "full.png", "photo-2.psic", "alice.psic", "alice-full.png"):
        assert (work / name).is_file()
