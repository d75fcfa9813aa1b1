"""The plugin manager: built-ins listed, a third-party plugin's hooks (registered directly and through an entry
point), key providers and the order keys are taken in."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import psic_core
import psic_plugins
from psic_plugins.keys import EnvironmentKey, key_for
from plugins_fixtures import KEY, crop, run_python, samples  # noqa: F401  (fixtures)


@pytest.fixture
def registered():
    """Register plugins for one test: ``registered(plugin, name=None)``; all are unregistered afterwards."""
    plugins = []

    def register(plugin, name=None):
        psic_plugins.pm.register(plugin, name=name)
        plugins.append(plugin)
        return plugin

    yield register
    for plugin in plugins:
        psic_plugins.pm.unregister(plugin)


def test_list_plugins_lists_the_builtins_with_versions_and_hooks():
    plugins = {p["name"]: p for p in psic_plugins.list_plugins()}
    assert plugins["psic.pillow"] == {"name": "psic.pillow", "version": psic_core.__version__,
                                      "hooks": ["register_image_libraries"]}
    assert plugins["psic.imageio"]["hooks"] == ["register_image_libraries"]
    assert {"imageio", "pillow"} <= set(psic_plugins.image_libraries())


def test_a_third_party_backbone_and_weights_work_through_pillow(crop, registered, tmp_path):
    """A plugin adds an architecture and weights for it; Pillow then encodes and decodes with them."""
    from psic_core.models import BACKBONES
    from psic_core.weights import save_weights

    class PluginBackbone(BACKBONES["mean-scale-hyperprior"]):
        pass

    # the weights file a plugin package would ship, made before the plugin is registered
    model = PluginBackbone(N=32, M=48)
    model.backbone_name = "psic-test-plugin-backbone"  # what registering the class will set
    model.update(force=True)
    weights_path = tmp_path / "plugin-weights.safetensors"
    save_weights(model.eval(), weights_path, name="psic-test-plugin-weights")

    class CodecPlugin:
        @psic_plugins.hookimpl
        def register_backbones(self, register):
            register("psic-test-plugin-backbone", PluginBackbone)

        @psic_plugins.hookimpl
        def register_weights(self, register):
            register(weights_path)

    try:
        registered(CodecPlugin())
        psic_plugins.load_codec_plugins()
        assert BACKBONES["psic-test-plugin-backbone"] is PluginBackbone
        crop.save(tmp_path / "x.psic", model="psic-test-plugin-weights", key=KEY)
        with Image.open(tmp_path / "x.psic") as im:
            assert im.info["psic"]["model"] == "psic-test-plugin-weights"
            decoded = np.asarray(im.unlock(KEY))
        np.testing.assert_array_equal(decoded, psic_core.decode(tmp_path / "x.psic", key=KEY, output="numpy"))
    finally:
        BACKBONES.pop("psic-test-plugin-backbone", None)


def test_a_late_plugin_is_still_called_by_the_historic_hooks(registered):
    psic_plugins.load_codec_plugins()  # the hooks ran already
    installed = []

    class LibraryPlugin:
        @psic_plugins.hookimpl
        def register_image_libraries(self, register):
            register("psic-test-library", lambda: installed.append("installed"))

    registered(LibraryPlugin(), name="psic-test-library-plugin")
    assert installed == ["installed"] and "psic-test-library" in psic_plugins.image_libraries()
    assert {"name": "psic-test-library-plugin", "version": None, "hooks": ["register_image_libraries"]} in \
        psic_plugins.list_plugins()


def test_the_vlp_hook_feeds_the_core_registry(registered):
    from psic_core.vlp import available_vlps

    def factory():
        raise AssertionError("a factory runs only when a run asks for its VLP")

    class VlpPlugin:
        @psic_plugins.hookimpl
        def register_vlps(self, register):
            register("psic-test-plugin-vlp", factory)

    registered(VlpPlugin())
    psic_plugins.load_vlp_plugins()
    assert "psic-test-plugin-vlp" in available_vlps()


def test_a_key_provider_serves_locked_files_through_both_libraries(samples, registered):
    import imageio.v3 as iio

    asked = []

    class KeyStore:
        @psic_plugins.hookimpl
        def psic_key_for(self, info):
            asked.append(info["text"].get("key-id"))
            return {"alice": KEY}.get(info["text"].get("key-id"))

    registered(KeyStore())
    np.testing.assert_array_equal(np.asarray(Image.open(samples["locked"].path)), samples["locked"].full)
    np.testing.assert_array_equal(iio.imread(samples["locked"].path), samples["locked"].full)
    # an open file needs no key: providers are not asked, and it keeps its protected default
    np.testing.assert_array_equal(np.asarray(Image.open(samples["open"].path)), samples["open"].protected)
    assert asked == ["alice", "alice"]


def test_a_provider_serving_a_wrong_key_fails_like_any_wrong_key(samples, registered):
    class BadStore:
        @psic_plugins.hookimpl
        def psic_key_for(self):
            return "wrong key"

    registered(BadStore())
    with Image.open(samples["locked"].path) as im, pytest.raises(psic_core.PsicKeyError):
        im.load()


def test_key_order_explicit_then_unlocked_block_then_providers(registered):
    info = {"locked": True}

    class Store:
        @psic_plugins.hookimpl
        def psic_key_for(self):
            return "from the provider"

    assert key_for(info) is None
    registered(Store())
    assert key_for(info) == "from the provider"
    assert key_for(info, providers=False) is None
    assert key_for({"locked": False}) is None
    with psic_plugins.unlocked("from the block"):
        assert key_for(info) == "from the block"
        assert key_for(info, "explicit") == "explicit"


def test_the_environment_key_provider_is_opt_in_and_answers_last(monkeypatch, registered):
    monkeypatch.setenv("PSIC_KEY", "from the environment")
    info = {"locked": True}
    assert key_for(info) is None  # not registered by default
    registered(EnvironmentKey())
    assert key_for(info) == "from the environment"

    class Store:
        @psic_plugins.hookimpl
        def psic_key_for(self):
            return "from the store"

    registered(Store())
    assert key_for(info) == "from the store"


def test_an_entry_point_plugin_is_loaded_unless_autoload_is_disabled(samples, random_weights, tmp_path):
    """A package installed with an entry point in group ``psic``: a module and a dist-info on sys.path."""
    (tmp_path / "psic_test_keystore.py").write_text(
        "import psic_plugins\n"
        "@psic_plugins.hookimpl\n"
        "def psic_key_for(info):\n"
        f"    return {KEY!r} if info['text'].get('key-id') == 'alice' else None\n"
    )
    dist_info = tmp_path / "psic_test_keystore-1.2.3.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: psic-test-keystore\nVersion: 1.2.3\n")
    (dist_info / "entry_points.txt").write_text("[psic]\nkeystore = psic_test_keystore\n")
    code = f"""
        import json, psic_plugins
        from psic_plugins.keys import key_for
        import psic_core
        info = psic_core.info({str(samples["locked"].path)!r})
        print(json.dumps([psic_plugins.list_plugins(), key_for(info)]))
    """
    plugins, key = json.loads(run_python(code, random_weights, PYTHONPATH=str(tmp_path),
                                         PSIC_DISABLE_PLUGIN_AUTOLOAD=None))
    assert {"name": "keystore", "version": "1.2.3", "hooks": ["psic_key_for"]} in plugins and key == KEY
    plugins, key = json.loads(run_python(code, random_weights, PYTHONPATH=str(tmp_path),
                                         PSIC_DISABLE_PLUGIN_AUTOLOAD="1"))
    assert [p["name"] for p in plugins] == ["psic.imageio", "psic.pillow"] and key is None


def _entry_point_package(site, module: str, source: str) -> None:
    """An installed package ``psic-test-<module>`` 1.0 whose entry point ``<module>`` in group ``psic`` is the
    module ``psic_test_<module>`` with ``source``."""
    (site / f"psic_test_{module}.py").write_text(source)
    dist_info = site / f"psic_test_{module}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: psic-test-{module}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(f"[psic]\n{module} = psic_test_{module}\n")


def test_a_broken_entry_point_plugin_is_skipped_with_one_warning_line(tmp_path, random_weights):
    hook = "@psic_plugins.hookimpl\ndef {}(info):\n    return None\n"
    _entry_point_package(tmp_path, "misspelt", "import psic_plugins\n" + hook.format("psic_register_formatz"))
    _entry_point_package(tmp_path, "unimportable", "raise ImportError('needs acme_sdk')\n")
    _entry_point_package(tmp_path, "working", "import psic_plugins\n" + hook.format("psic_key_for"))
    environment = {**os.environ, "PYTHONPATH": str(tmp_path), "PSIC_WEIGHTS_PATH": str(random_weights.path.parent)}
    environment.pop("PSIC_DISABLE_PLUGIN_AUTOLOAD", None)

    def psic(*argv, **env):
        return subprocess.run([sys.executable, "-m", "psic_plugins.cli", *argv], capture_output=True, text=True,
                              env={**environment, **env}, timeout=300)

    done = psic("--help")
    assert done.returncode == 0 and "usage: psic" in done.stdout and "Traceback" not in done.stderr
    done = psic("plugins")
    assert done.returncode == 0
    listed, libraries = done.stdout.splitlines()[:-1], done.stdout.splitlines()[-1]
    assert [line.split()[0] for line in listed] == ["psic.imageio", "psic.pillow", "working"]
    assert libraries == "image libraries: imageio, pillow"
    misspelt, unimportable = sorted(done.stderr.splitlines())
    assert "skipped the psic plugin 'misspelt' (psic_test_misspelt, from psic-test-misspelt 1.0)" in misspelt
    assert "unknown hook 'psic_register_formatz'" in misspelt
    assert "skipped the psic plugin 'unimportable'" in unimportable and "ImportError: needs acme_sdk" in unimportable
    assert all("PsicPluginWarning" in line and "PSIC_DISABLE_PLUGIN_AUTOLOAD=1" in line
               for line in (misspelt, unimportable))
    done = psic("plugins", PSIC_DISABLE_PLUGIN_AUTOLOAD="1")
    assert done.returncode == 0 and done.stderr == "" and "working" not in done.stdout
