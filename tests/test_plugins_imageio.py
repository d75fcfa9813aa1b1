"""The imageio v3 plugin: imread/imwrite/improps/immeta/imopen, and that psic's plugin is the one imageio used."""

from __future__ import annotations

import io

import imageio.v3 as iio
import numpy as np
import pytest
from imageio.config import known_extensions, known_plugins

import psic_core
import psic_plugins
from psic_core import container
from psic_core.errors import PsicFormatError, PsicIntegrityError, PsicKeyError
from psic_plugins.imageio import PsicPlugin
from plugins_fixtures import KEY, crop, samples  # noqa: F401  (fixtures)


@pytest.fixture
def psic_calls(monkeypatch) -> list[str]:
    """The PsicPlugin methods imageio called, in order (to tell psic's plugin from Pillow's or tifffile's)."""
    calls = []
    for method in ("read", "write", "properties", "metadata"):
        original = getattr(PsicPlugin, method)

        def spy(self, *args, _original=original, _method=method, **kwargs):
            calls.append(_method)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(PsicPlugin, method, spy)
    return calls


def test_psic_comes_first_for_its_extension_and_in_the_fallback_order():
    assert known_extensions[".psic"][0].priority[0] == "psic"
    assert next(iter(known_plugins)) == "psic"
    psic_plugins.register_imageio_plugin()  # registering again changes nothing
    assert [e.priority for e in known_extensions[".psic"]].count(["psic"]) == 1
    assert list(known_plugins).count("psic") == 1 and next(iter(known_plugins)) == "psic"


def test_imread_gives_the_protected_image_and_with_key_the_full_one(samples, psic_calls):
    sample = samples["locked"]
    np.testing.assert_array_equal(iio.imread(sample.path), sample.protected)
    full = iio.imread(sample.path, key=KEY)
    np.testing.assert_array_equal(full, sample.full)
    assert full.flags.writeable
    assert psic_calls == ["read", "read"]


def test_imread_of_bytes_without_extension_reaches_psic_first(samples, psic_calls):
    sample = samples["locked"]
    np.testing.assert_array_equal(iio.imread(sample.data, key=KEY), sample.full)
    np.testing.assert_array_equal(iio.imread(io.BytesIO(sample.data)), sample.protected)
    assert psic_calls == ["read", "read"]


def test_imread_options(samples):
    sample = samples["locked"]
    np.testing.assert_array_equal(iio.imread(sample.path, key=KEY, full=False), sample.protected)
    np.testing.assert_array_equal(iio.imread(sample.path, index=...), sample.protected[None])
    with pytest.raises(ValueError, match="one image"):
        iio.imread(sample.path, index=1)
    with psic_plugins.unlocked(KEY):
        np.testing.assert_array_equal(iio.imread(sample.path), sample.full)


def test_wrong_key_raises(samples):
    with pytest.raises(PsicKeyError):
        iio.imread(samples["locked"].path, key="wrong key")


def test_improps_and_immeta_read_the_header(samples, psic_calls):
    sample = samples["locked"]
    props = iio.improps(sample.path)
    assert props.shape == (64, 96, 3) and props.dtype == np.uint8 and not props.is_batch
    batch = iio.improps(sample.path, index=...)
    assert batch.shape == (1, 64, 96, 3) and batch.is_batch and batch.n_images == 1
    meta = iio.immeta(sample.path)
    expected = psic_core.info(sample.path)
    assert {k: meta[k] for k in ("width", "height", "mode", "locked", "model_sha256", "text", "bytes")} == \
        {k: expected[k] for k in ("width", "height", "mode", "locked", "model_sha256", "text", "bytes")}
    assert psic_calls == ["properties", "properties", "metadata"]


@pytest.mark.parametrize("channels, mode, shape", [(None, "L", (64, 96)), (2, "LA", (64, 96, 2)),
                                                   (3, "RGB", (64, 96, 3)), (4, "RGBA", (64, 96, 4))])
def test_imwrite_round_trips_every_mode(crop, random_weights, tmp_path, psic_calls, channels, mode, shape):
    rgb = np.asarray(crop)
    alpha = np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (64, 1))
    grey = rgb[:, :, 1]
    array = {None: grey, 2: np.dstack([grey, alpha]), 3: rgb, 4: np.dstack([rgb, alpha])}[channels]
    iio.imwrite(tmp_path / "x.psic", array, model=random_weights.name, key=KEY)
    assert iio.improps(tmp_path / "x.psic").shape == shape
    assert iio.immeta(tmp_path / "x.psic")["mode"] == mode
    full = iio.imread(tmp_path / "x.psic", key=KEY)
    assert full.shape == shape
    if channels in (2, 4):
        np.testing.assert_array_equal(full[..., -1], alpha)  # alpha is lossless
    assert psic_calls == ["write", "properties", "metadata", "read"]


def test_imwrite_to_bytes_with_options(crop, random_weights, psic_calls):
    data = iio.imwrite("<bytes>", np.asarray(crop), extension=".psic", model=random_weights.name, key=KEY,
                       text={"key-id": "carol"})
    info = psic_core.info(data)
    assert info["locked"] and info["text"] == {"key-id": "carol"} and info["model"] == random_weights.name
    np.testing.assert_array_equal(iio.imread(data, key=KEY), psic_core.decode(data, key=KEY, output="numpy"))
    assert psic_calls == ["write", "read"]


def test_imwrite_takes_a_batch_or_list_of_one_image_only(crop, random_weights):
    rgb = np.asarray(crop)
    data = iio.imwrite("<bytes>", [rgb], extension=".psic", model=random_weights.name)
    assert psic_core.info(data)["width"] == 96
    with pytest.raises(ValueError, match="one image, not 2"):
        iio.imwrite("<bytes>", np.stack([rgb, rgb]), extension=".psic", model=random_weights.name)


def test_imopen_read_and_write(samples, random_weights, tmp_path):
    with iio.imopen(samples["open"].path, "r") as file:
        assert isinstance(file, PsicPlugin)
        assert file.metadata()["locked"] is False
        np.testing.assert_array_equal(file.read(), samples["open"].protected)
    with iio.imopen(tmp_path / "y.psic", "w") as file:
        assert isinstance(file, PsicPlugin)
        file.write(samples["open"].full, model=random_weights.name)
        with pytest.raises(ValueError, match="written already"):
            file.write(samples["open"].full, model=random_weights.name)
    assert psic_core.info(tmp_path / "y.psic")["width"] == 96


def test_foreign_files_go_to_other_plugins(crop, tmp_path, psic_calls):
    rgb = np.asarray(crop)
    iio.imwrite(tmp_path / "x.png", rgb)
    png = (tmp_path / "x.png").read_bytes()
    np.testing.assert_array_equal(iio.imread(tmp_path / "x.png"), rgb)
    # bytes reach psic first (fallback order); its InitializationError must leave the request usable for Pillow
    np.testing.assert_array_equal(iio.imread(png), rgb)
    with iio.imopen(png, "r") as file:
        assert not isinstance(file, PsicPlugin)
    assert psic_calls == []
    with pytest.raises(OSError):  # nothing reads a file psic calls .psic but is not
        iio.imread(png, extension=".psic", plugin="psic")


def test_a_refusal_leaves_the_request_usable(crop):
    """imageio hands the same request to each plugin listed for an extension: a refusing psic must not finish it."""
    from imageio.core.request import InitializationError, Request

    png = iio.imwrite("<bytes>", np.asarray(crop), extension=".png")
    request = Request(png, "r", extension=".psic")
    with pytest.raises(InitializationError):
        PsicPlugin(request)
    assert request.get_file().read() == png


def test_writing_another_extension_is_not_psic(crop, tmp_path, psic_calls):
    iio.imwrite(tmp_path / "x.bmp", np.asarray(crop))
    assert psic_calls == [] and iio.immeta(tmp_path / "x.bmp") is not None


@pytest.mark.parametrize("damage", ["header crc", "tile crc"])
def test_a_corrupt_psic_file_raises_a_format_error(samples, tmp_path, damage):
    data = bytearray(samples["locked"].data)
    data[20 if damage == "header crc" else -40] ^= 0xFF
    (tmp_path / "x.psic").write_bytes(bytes(data))
    with pytest.raises(PsicFormatError, match="CRC"):
        iio.imread(tmp_path / "x.psic")


def test_tile_data_altered_behind_valid_crcs_raises_a_format_error(samples, tmp_path):
    f = container.read(samples["locked"].data)
    f.tiles[0].latent_digest = bytes(b ^ 0xFF for b in f.tiles[0].latent_digest)
    (tmp_path / "x.psic").write_bytes(container.serialize(f))  # serialize writes valid CRCs
    with pytest.raises(PsicFormatError, match="digest") as caught:
        iio.imread(tmp_path / "x.psic")
    assert isinstance(caught.value, PsicIntegrityError)


def test_a_psic_file_under_another_name_is_read_by_psic_with_its_key(samples, tmp_path, psic_calls):
    renamed = tmp_path / "holiday.png"
    renamed.write_bytes(samples["locked"].data)
    np.testing.assert_array_equal(iio.imread(renamed, key=KEY), samples["locked"].full)
    np.testing.assert_array_equal(iio.imread(renamed), samples["locked"].protected)
    assert psic_calls == ["read", "read"]


def test_quality_outside_the_installed_levels_is_refused(crop):
    with pytest.raises(ValueError, match="quality must be an integer from 1 to 4.*not 95"):
        iio.imwrite("<bytes>", np.asarray(crop), extension=".psic", quality=95)
