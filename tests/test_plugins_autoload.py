"""The opt-in start-up hook: a .pth in a site dir registers .psic lazily for programs that never import psic."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from psic_core import container
from psic_plugins import autoload, install_autoload, uninstall_autoload
from plugins_fixtures import KEY, crop, run_python, samples  # noqa: F401  (fixtures)


def test_the_start_up_copies_of_the_format_constants_match():
    assert autoload.SIGNATURE == container.SIGNATURE
    assert Image.registered_extensions()[autoload.EXTENSION] == autoload.FORMAT
    assert Image.MIME[autoload.FORMAT] == autoload.MIME_TYPE


def test_install_writes_the_pth_and_its_compiled_module_and_uninstall_removes_them(tmp_path):
    pth, shim, compiled = install_autoload(tmp_path)
    assert pth.read_text() == "import psic_autoload; psic_autoload.install()\n"
    assert shim.name == "psic_autoload.py" and shim.read_text() == open(autoload.__file__).read()
    assert compiled.parent == tmp_path / "__pycache__" and compiled.stat().st_size > 0
    assert sorted(uninstall_autoload(tmp_path)) == sorted([pth, shim, compiled])
    assert not any(path.is_file() for path in tmp_path.rglob("*")) and uninstall_autoload(tmp_path) == []


def test_pillow_opens_psic_lazily_without_importing_psic_first(samples, random_weights, tmp_path):
    (tmp_path / "site").mkdir()
    install_autoload(tmp_path / "site")
    out = run_python(f"""
        import json, site, sys
        import numpy as np
        site.addsitedir({str(tmp_path / "site")!r})  # processes psic_autoload.pth as site-packages would
        loaded = lambda: [m for m in ("psic_plugins", "psic_core", "numpy", "torch") if m in sys.modules]
        before = loaded()
        from PIL import Image
        after_pil = [Image.OPEN["PSIC"][0].__name__, loaded()]
        im = Image.open({str(samples["locked"].path)!r})
        after_open = [type(im).__name__, loaded()]
        np.save({str(tmp_path / "full.npy")!r}, np.asarray(im.unlock({KEY!r})))
        print(json.dumps([before, after_pil, after_open]))
    """, random_weights)
    before, after_pil, after_open = json.loads(out)
    assert before == ["numpy"]  # this test's own import
    assert after_pil == ["_open_lazily", ["numpy"]]  # a placeholder: nothing of psic imported yet
    assert after_open == ["PsicImageFile", ["psic_plugins", "psic_core", "numpy"]]  # no torch before load()
    np.testing.assert_array_equal(np.load(tmp_path / "full.npy"), samples["locked"].full)


def test_imageio_and_pillow_save_lazily(crop, samples, random_weights, tmp_path):
    (tmp_path / "site").mkdir()
    install_autoload(tmp_path / "site")
    crop.save(tmp_path / "crop.png")
    out = run_python(f"""
        import json, site, sys
        site.addsitedir({str(tmp_path / "site")!r})
        import imageio.v3 as iio
        from imageio.config import known_extensions, known_plugins
        registered = [next(iter(known_plugins)), known_extensions[".psic"][0].priority, "psic_plugins" in sys.modules]
        from PIL import Image
        Image.open({str(tmp_path / "crop.png")!r}).save({str(tmp_path / "x.psic")!r}, model="random-mshp", key={KEY!r})
        full = iio.imread({str(tmp_path / "x.psic")!r}, key={KEY!r})
        print(json.dumps([registered, full.shape]))
    """, random_weights)
    registered, shape = json.loads(out)
    assert registered == ["psic", ["psic"], False] and shape == [64, 96, 3]
    assert Image.open(tmp_path / "x.psic").info["psic"]["locked"]


def test_lazily_other_files_import_no_psic_and_psic_content_is_found_by_signature(crop, samples, random_weights,
                                                                                  tmp_path):
    (tmp_path / "site").mkdir()
    install_autoload(tmp_path / "site")
    crop.save(tmp_path / "crop.png")
    (tmp_path / "renamed.png").write_bytes(samples["locked"].data)
    (tmp_path / "existing.psic").write_bytes(b"the previous version")
    out = run_python(f"""
        import json, site, sys
        import numpy as np
        site.addsitedir({str(tmp_path / "site")!r})
        import imageio.v3 as iio
        png = iio.imread({str(tmp_path / "crop.png")!r})
        iio.imread(open({str(tmp_path / "crop.png")!r}, "rb").read())
        psic_imported_by_png_reads = "psic_plugins" in sys.modules
        np.save({str(tmp_path / "full.npy")!r}, iio.imread({str(tmp_path / "renamed.png")!r}, key={KEY!r}))
        from PIL import Image
        try:
            Image.fromarray(png).save({str(tmp_path / "existing.psic")!r}, quality=0)
        except ValueError as exc:
            refused = str(exc)
        print(json.dumps([psic_imported_by_png_reads, refused]))
    """, random_weights)
    psic_imported_by_png_reads, refused = json.loads(out)
    assert not psic_imported_by_png_reads
    np.testing.assert_array_equal(np.load(tmp_path / "full.npy"), samples["locked"].full)
    assert "quality must be" in refused and (tmp_path / "existing.psic").read_bytes() == b"the previous version"
