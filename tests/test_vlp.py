"""Target VLP adapter: differentiable preprocessing, safetensors round trips, registry (tiny random models only)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from psic_core.errors import PsicModelError
from psic_core.vlp import TargetVLP, describe_vlp_file, load_vlp, register_vlp, save_vlp
from psic_core.vlp.adapter import fit_to_model, resize
from psic_core.vlp.configs import ensure_model_config
from psic_core.vlp.registry import BUNDLED_DIR

TINY = "psic-test-tiny-vit"
TINY_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    # the default CLIP tokenizer emits ids up to 49407, so the vocabulary keeps its full size
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny() -> TargetVLP:
    ensure_model_config(TINY, TINY_CONFIG)
    torch.manual_seed(0)
    return TargetVLP.from_open_clip(TINY).eval()


@pytest.fixture(scope="module")
def tiny_file(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("vlp") / "tiny.safetensors"
    save_vlp(tiny, path, name="tiny", training={"note": "random"}, dtype=torch.float32)
    return path


def test_preprocessing_resizes_any_size_to_the_model_input(tiny):
    assert tiny.image_size == (32, 32)
    assert tiny.preprocess(torch.rand(2, 3, 50, 80)).shape == (2, 3, 32, 32)
    assert tiny.preprocess(torch.rand(3, 17, 9)).shape == (1, 3, 32, 32)
    mixed = tiny.preprocess([torch.rand(3, 40, 64), torch.rand(3, 64, 40), torch.rand(1, 3, 32, 32)])
    assert mixed.shape == (3, 3, 32, 32)


def test_preprocessing_normalises_with_the_model_mean_and_std(tiny):
    grey = torch.full((1, 3, 32, 32), 0.5)
    expected = (0.5 - torch.tensor(tiny.preprocess_cfg["mean"])) / torch.tensor(tiny.preprocess_cfg["std"])
    torch.testing.assert_close(tiny.preprocess(grey)[0, :, 5, 5], expected)


def test_shortest_side_resize_then_centre_crop():
    image = torch.rand(1, 3, 64, 128)
    cfg = {"size": 32, "resize_mode": "shortest", "interpolation": "bicubic"}
    torch.testing.assert_close(fit_to_model(image, cfg), resize(image, (32, 64))[..., :, 16:48])


def test_longest_side_resize_pads_with_the_fill_colour():
    cfg = {"size": 32, "resize_mode": "longest", "interpolation": "bilinear", "fill_color": 0}
    out = fit_to_model(torch.ones(1, 3, 16, 64), cfg)
    assert out.shape == (1, 3, 32, 32)
    assert out[..., :12, :].abs().max() == 0 and out[..., 12:20, :].min() > 0.99


def test_gradients_reach_the_image_through_a_frozen_vlp(tiny_file):
    vlp = load_vlp(tiny_file)
    assert not any(p.requires_grad for p in vlp.parameters()) and not vlp.training
    image = torch.rand(2, 3, 48, 40, requires_grad=True)
    embedding = vlp.encode_image(image)
    torch.testing.assert_close(embedding.norm(dim=-1), torch.ones(2))
    (embedding @ vlp.encode_text(["a photo of a cat.", "a dog"]).T).sum().backward()
    assert image.grad is not None and torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0


def test_rejects_images_that_are_not_float_rgb(tiny):
    with pytest.raises(ValueError, match="RGB"):
        tiny.encode_image(torch.rand(1, 4, 32, 32))
    with pytest.raises(ValueError, match="float"):
        tiny.encode_image(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(TypeError):
        tiny.encode_text("one string")


def test_text_embeddings_and_logit_scale(tiny):
    text = tiny.encode_text(["a photo of a cat.", "a photo of a dog.", "{}"])
    assert text.shape == (3, 16)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))
    assert tiny.tokenize(["hi"]).shape == (1, 16)
    assert 1 < tiny.logit_scale.item() <= 100


def test_safetensors_round_trip_gives_the_same_embeddings(tiny, tiny_file):
    info = describe_vlp_file(tiny_file)
    assert (info.name, info.model_name, info.config, info.training) == ("tiny", TINY, TINY_CONFIG, {"note": "random"})
    loaded = load_vlp(tiny_file)
    image, texts = torch.rand(2, 3, 32, 32), ["a red car", "a tree"]
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(image), tiny.encode_image(image))
        torch.testing.assert_close(loaded.encode_text(texts), tiny.encode_text(texts))


def test_fp16_export_stays_close(tiny, tmp_path):
    path = tmp_path / "tiny16.safetensors"
    save_vlp(tiny, path, name="tiny16")
    image = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_vlp(path).encode_image(image), tiny.encode_image(image), atol=5e-3, rtol=0)


def test_plain_open_clip_weights_load_through_open_clip(tiny, tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.model.state_dict().items()}, str(path))
    loaded = load_vlp(f"open_clip:{TINY}", pretrained=str(path))
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(image), tiny.encode_image(image))
    with pytest.raises(PsicModelError, match="not a psic VLP file"):
        load_vlp(path)


def test_config_from_a_file_is_registered_with_open_clip(tiny, tmp_path):
    path = tmp_path / "renamed.safetensors"
    save_vlp(tiny, path, name="renamed", dtype=torch.float32)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta["psic.vlp.open_clip_model"] = "psic-test-only-in-file"
    save_file(tensors, str(path), metadata=meta)
    assert load_vlp(path).name == "psic-test-only-in-file"
    with pytest.raises(PsicModelError, match="different model config"):
        ensure_model_config("psic-test-only-in-file", {**TINY_CONFIG, "embed_dim": 8})


def test_registry(tiny_file):
    register_vlp("psic-test-registered", lambda: TargetVLP.from_open_clip(TINY))
    assert not load_vlp("psic-test-registered").training
    with pytest.raises(ValueError, match="already registered"):
        register_vlp("psic-test-registered", lambda: None)
    with pytest.raises(PsicModelError, match="no VLP named"):
        load_vlp("no-such-vlp")
    with pytest.raises(PsicModelError, match="does not exist"):
        load_vlp(tiny_file.parent / "missing.safetensors")
    with pytest.raises(PsicModelError, match="pretrained"):
        load_vlp("psic-test-registered", pretrained="x")


@pytest.mark.skipif(not (BUNDLED_DIR / "refclip-s.safetensors").exists(), reason="reference weights not trained yet")
def test_bundled_reference_vlp_loads():
    vlp = load_vlp()
    info = describe_vlp_file(BUNDLED_DIR / "refclip-s.safetensors")
    assert vlp.name == info.model_name == "refclip-s"
    assert (BUNDLED_DIR / "refclip-s.safetensors").stat().st_size <= 20 * 2**20
    with torch.no_grad():
        assert vlp.encode_image(torch.rand(1, 3, 60, 90)).shape == vlp.encode_text(["a cat"]).shape
    assert info.training["script"] == "psic_core.vlp.train"
