"""The Pillow format: Image.open reads the header only, load() decodes, save() encodes, keys, errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageCms, UnidentifiedImageError

import psic_core
import psic_plugins
from psic_core import container
from psic_core.errors import PsicFormatError, PsicIntegrityError, PsicKeyError, PsicModelError
from psic_plugins.pillow import BrokenPsicImageError, PsicImageFile, UnidentifiedPsicImageError
from plugins_fixtures import KEY, crop, run_python, samples  # noqa: F401  (fixtures)


def test_open_reads_the_header_and_leaves_decoding_to_load(samples):
    with Image.open(samples["locked"].path) as im:
        assert isinstance(im, PsicImageFile) and im.format == "PSIC"
        assert im.get_format_mimetype() == "image/x-psic"
        assert (im.size, im.mode) == ((96, 64), "RGB")
        # every psic_core.info field; "tiles" aside: header_info counts the tiles parsed, none after a header read
        expected = {k: v for k, v in psic_core.info(samples["locked"].path).items() if k != "tiles"}
        assert {k: v for k, v in im.info["psic"].items() if k != "tiles"} == expected
        assert im.info["psic"]["locked"] and im.info["psic"]["text"] == {"key-id": "alice"}
        assert im._im is None  # nothing decoded yet
        im.load()
        assert im._im is not None and im.fp is None  # decoded, and the file Pillow opened is closed


def test_registered_extension_and_mime_type():
    assert Image.registered_extensions()[".psic"] == "PSIC"
    assert Image.MIME["PSIC"] == "image/x-psic"


def test_open_imports_no_torch_load_decodes_and_the_acceptance_lines_work(samples, random_weights, tmp_path):
    """In a fresh interpreter: the issue's one-liners, and torch stays out until pixels are needed."""
    out = run_python(f"""
        import json, sys
        import numpy as np
        import psic_plugins
        from PIL import Image
        import imageio.v3 as iio

        im = Image.open({str(samples["locked"].path)!r})
        header = [im.size, im.mode, im.info["psic"]["locked"]]
        props = iio.improps({str(samples["locked"].path)!r})
        meta = iio.immeta({str(samples["locked"].path)!r})
        torch_before_load = "torch" in sys.modules
        im.load()
        Image.open({str(samples["locked"].path)!r}).save({str(tmp_path / "x.png")!r})
        protected = iio.imread({str(samples["locked"].path)!r})
        full = iio.imread({str(samples["locked"].path)!r}, key={KEY!r})
        np.save({str(tmp_path / "protected.npy")!r}, protected)
        np.save({str(tmp_path / "full.npy")!r}, full)
        print(json.dumps([header, list(props.shape), meta["width"], torch_before_load, "torch" in sys.modules]))
    """, random_weights)
    header, shape, width, torch_before_load, torch_after_load = json.loads(out)
    assert header == [[96, 64], "RGB", True] and shape == [64, 96, 3] and width == 96
    assert not torch_before_load and torch_after_load
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "x.png")), samples["locked"].protected)
    np.testing.assert_array_equal(np.load(tmp_path / "protected.npy"), samples["locked"].protected)
    np.testing.assert_array_equal(np.load(tmp_path / "full.npy"), samples["locked"].full)


def test_no_key_gives_the_protected_image(samples):
    for sample in samples.values():
        np.testing.assert_array_equal(np.asarray(Image.open(sample.path)), sample.protected)


def test_unlock_gives_the_full_image(samples):
    sample = samples["locked"]
    im = Image.open(sample.path).unlock(KEY)
    np.testing.assert_array_equal(np.asarray(im), sample.full)
    assert not np.array_equal(sample.full, sample.protected)


def test_any_key_opens_the_full_decoding_of_an_open_file(samples):
    np.testing.assert_array_equal(np.asarray(Image.open(samples["open"].path).unlock("anything")),
                                  samples["open"].full)


def test_unlocked_block_covers_a_load_after_the_block(samples):
    sample = samples["locked"]
    with psic_plugins.unlocked(KEY):
        inside = Image.open(sample.path)
    later = Image.open(sample.path)
    np.testing.assert_array_equal(np.asarray(inside), sample.full)
    np.testing.assert_array_equal(np.asarray(later), sample.protected)


def test_unlocked_block_applies_to_loads_inside_it(samples):
    im = Image.open(samples["locked"].path)
    with psic_plugins.unlocked(KEY):
        im.load()
    np.testing.assert_array_equal(np.asarray(im), samples["locked"].full)


def test_unlock_wins_over_an_enclosing_block(samples):
    with psic_plugins.unlocked("wrong key"):
        im = Image.open(samples["locked"].path).unlock(KEY)
    np.testing.assert_array_equal(np.asarray(im), samples["locked"].full)


def test_wrong_key_raises_on_load_and_a_retry_with_the_right_key_works(samples):
    im = Image.open(samples["locked"].path).unlock("wrong key")  # opening checks nothing
    with pytest.raises(PsicKeyError):
        im.load()
    im.unlock(KEY)
    np.testing.assert_array_equal(np.asarray(im), samples["locked"].full)
    with psic_plugins.unlocked("wrong key"), Image.open(samples["locked"].path) as im, pytest.raises(PsicKeyError):
        im.load()


def test_unlock_rejects_empty_keys_and_comes_before_load(samples):
    im = Image.open(samples["locked"].path)
    with pytest.raises(PsicKeyError, match="empty"):
        im.unlock("")
    with pytest.raises(PsicKeyError, match="empty"), psic_plugins.unlocked(b""):
        pass
    im.load()
    with pytest.raises(ValueError, match="before"):
        im.unlock(KEY)


@pytest.mark.parametrize("mode, expected", [("RGB", "RGB"), ("L", "L"), ("RGBA", "RGBA"), ("LA", "LA"),
                                            ("P", "RGB"), ("I;16", "L")])
def test_save_encodes_from_any_mode(crop, random_weights, mode, expected):
    if mode == "P":
        source = crop.quantize(64)
    elif mode in ("RGBA", "LA"):
        source = crop.convert(mode)
        source.putalpha(Image.linear_gradient("L").resize(crop.size))
    else:
        source = crop.convert(mode)
    buffer = io.BytesIO()
    source.save(buffer, "PSIC", model=random_weights.name, key=KEY)
    data = buffer.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == expected and im.size == crop.size and im.info["psic"]["locked"]
        np.testing.assert_array_equal(np.asarray(im.unlock(KEY)), psic_core.decode(data, key=KEY, output="numpy"))
    if expected.endswith("A"):  # alpha is kept losslessly
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data)).getchannel("A")),
                                      np.asarray(source.getchannel("A")))


def test_save_by_extension_with_text_and_metadata(crop, random_weights, tmp_path):
    source = crop.copy()
    source.info["icc_profile"] = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation
    exif[0x010F] = "camera maker"
    source.info["exif"] = exif.tobytes()
    source.save(tmp_path / "x.psic", model=random_weights.name, text={"key-id": "bob"})
    with Image.open(tmp_path / "x.psic") as im:
        assert im.info["psic"]["text"] == {"key-id": "bob"} and not im.info["psic"]["locked"]
        assert im.info["icc_profile"] == source.info["icc_profile"]
        assert dict(im.getexif()) == {0x0112: 6}  # the orientation stays visible; other EXIF is dropped by default
        im.save(tmp_path / "x.png")
    with Image.open(tmp_path / "x.png") as png:
        assert png.info["icc_profile"] == source.info["icc_profile"]


def test_save_rejects_unknown_weights_naming_what_exists(crop, tmp_path):
    with pytest.raises(psic_core.PsicModelError, match="no weights named"):
        crop.save(tmp_path / "x.psic", model="no-such-weights")
    assert not (tmp_path / "x.psic").exists()  # Pillow removes the file it created


def test_opener_options_set_save_defaults_and_key_provider_use(crop, random_weights, samples, tmp_path):
    class Provider:
        @psic_plugins.hookimpl
        def psic_key_for(self):
            return KEY

    provider = Provider()
    psic_plugins.pm.register(provider)
    try:
        psic_plugins.register_psic_opener(key_providers=False, model=random_weights.name)
        crop.save(tmp_path / "default-model.psic")  # no model= : the option's
        assert psic_core.info(tmp_path / "default-model.psic")["model"] == random_weights.name
        np.testing.assert_array_equal(np.asarray(Image.open(samples["locked"].path)), samples["locked"].protected)
        psic_plugins.register_psic_opener()
        np.testing.assert_array_equal(np.asarray(Image.open(samples["locked"].path)), samples["locked"].full)
    finally:
        psic_plugins.pm.unregister(provider)
        psic_plugins.register_psic_opener()


def test_thumbnail_and_draft(samples):
    im = Image.open(samples["locked"].path)
    assert im.draft("RGB", (24, 16)) is None  # no reduced decoding: draft is a no-op
    im.thumbnail((48, 48))
    assert im.size == (48, 32) and im.mode == "RGB"
    expected = Image.fromarray(samples["locked"].protected).resize((48, 32), Image.Resampling.BICUBIC,
                                                                   reducing_gap=2.0)
    np.testing.assert_array_equal(np.asarray(im), np.asarray(expected))


def test_verify_checks_the_whole_file_without_decoding(samples):
    with Image.open(samples["locked"].path) as im:
        im.verify()
    corrupt = bytearray(samples["locked"].data)
    corrupt[-40] ^= 0xFF  # inside the tile data
    with Image.open(io.BytesIO(bytes(corrupt))) as im, pytest.raises(BrokenPsicImageError, match="CRC"):
        im.verify()


def test_other_formats_are_untouched(crop, tmp_path):
    crop.save(tmp_path / "x.png")
    with Image.open(tmp_path / "x.png") as im:
        assert im.format == "PNG"
    with pytest.raises(UnidentifiedImageError):
        Image.open(tmp_path / "x.png", formats=["PSIC"])
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(b"\x89PSIX" + bytes(100)))


@pytest.mark.parametrize("damage", ["header crc", "truncated header", "truncated tiles"])
def test_a_corrupt_header_fails_open_with_both_error_types(samples, damage):
    data = bytearray(samples["locked"].data)
    if damage == "header crc":
        data[20] ^= 0xFF  # inside the HEAD chunk
    else:  # a cut in the tiles shows at open too: the first TILE chunk's length runs past the end
        data = data[:14] if damage == "truncated header" else data[:-30]
    with pytest.raises(UnidentifiedPsicImageError, match="cannot identify image file") as caught:
        Image.open(io.BytesIO(bytes(data)))
    assert isinstance(caught.value, UnidentifiedImageError) and isinstance(caught.value, PsicFormatError)


def test_corrupt_image_data_fails_load_as_an_oserror(samples):
    data = bytearray(samples["locked"].data)
    data[-40] ^= 0xFF  # inside the tile data
    im = Image.open(io.BytesIO(bytes(data)))  # the header is fine
    with pytest.raises(BrokenPsicImageError, match="CRC") as caught:
        im.load()
    assert isinstance(caught.value, OSError) and isinstance(caught.value, PsicFormatError)


def test_tile_data_altered_behind_valid_crcs_fails_load_as_an_oserror(samples):
    f = container.read(samples["locked"].data)
    f.tiles[0].latent_digest = bytes(b ^ 0xFF for b in f.tiles[0].latent_digest)
    im = Image.open(io.BytesIO(container.serialize(f)))  # serialize writes valid CRCs
    with pytest.raises(OSError, match="digest") as caught:
        im.load()
    assert isinstance(caught.value, PsicIntegrityError) and isinstance(caught.value, PsicFormatError)


def test_wrong_keys_and_missing_weights_fail_load_as_oserrors_of_their_psic_class(samples):
    im = Image.open(samples["locked"].path).unlock("wrong key")
    with pytest.raises(PsicKeyError) as caught:
        im.load()
    assert isinstance(caught.value, OSError)
    f = container.read(samples["open"].data)
    f.header.model_sha256 = "cd" * 32
    im = Image.open(io.BytesIO(container.serialize(f)))
    with pytest.raises(PsicModelError, match="cd" * 32) as caught:
        im.load()
    assert isinstance(caught.value, OSError)


def test_quality_outside_the_installed_levels_is_refused(crop):
    with pytest.raises(ValueError, match="quality must be an integer from 1 to 4.*not 95"):
        crop.save(io.BytesIO(), "PSIC", quality=95)


@pytest.mark.parametrize("bad_option", [{"model": "no-such-weights"}, {"quality": 0}, {"text": {"": "x"}}])
def test_a_failed_save_leaves_an_existing_file_untouched(crop, random_weights, tmp_path, bad_option):
    for target, format in ((tmp_path / "x.psic", None), (tmp_path / "x.bin", "PSIC")):
        target.write_bytes(b"the previous version")
        with pytest.raises((psic_core.PsicModelError, ValueError)):
            crop.save(target, format, **{"model": random_weights.name, **bad_option})
        assert target.read_bytes() == b"the previous version"
    crop.save(tmp_path / "x.psic", model=random_weights.name)  # and a save that works replaces it
    assert psic_core.info(tmp_path / "x.psic")["width"] == crop.width


def test_an_animation_saves_its_current_frame_with_a_warning_and_save_all_is_refused(crop, random_weights, tmp_path):
    frames = [crop.rotate(angle) for angle in (0, 180)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with Image.open(tmp_path / "anim.gif") as animation:
        animation.seek(1)
        with pytest.warns(UserWarning, match="2 frames.*only frame 2 is encoded"):
            animation.save(tmp_path / "x.psic", model=random_weights.name)
        expected = psic_core.encode(animation.convert("RGB"), model=random_weights.name)
    assert (tmp_path / "x.psic").read_bytes() == expected
    with pytest.raises(ValueError, match="holds one image"):
        frames[0].save(tmp_path / "x.psic", save_all=True, append_images=frames[1:], model=random_weights.name)
    assert (tmp_path / "x.psic").read_bytes() == expected


def test_a_key_provider_key_follows_the_one_key_rule(crop, random_weights):
    data = psic_core.encode(crop, model=random_weights.name, key="caf\u00e9")

    class DecomposedBytes:  # the same text, as UTF-8 bytes of its decomposed form (how macOS may store it)
        @psic_plugins.hookimpl
        def psic_key_for(self):
            return "cafe\u0301".encode()

    provider = DecomposedBytes()
    psic_plugins.pm.register(provider)
    try:
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))),
                                      psic_core.decode(data, key="caf\u00e9", output="numpy"))
    finally:
        psic_plugins.pm.unregister(provider)
