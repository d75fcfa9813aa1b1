"""Trigger capacity options (issue 13, item 3): ``model.cltg_sites`` (more CLTG bias sites) and ``model.cltg_latent``
(an image-specific trigger at the latent scale). Default off: the bundled weights decode as before; grown onto
bias-only weights they decode exactly like them until trained; the bitstream never depends on them."""

from __future__ import annotations

import pytest
import torch

from psic_core.errors import PsicModelError
from psic_core.models import build_backbone
from psic_core.models.base import condition_tensor
from psic_core.train.privacy import load_config, train
from psic_core.weights import describe, instantiate, save_weights
from test_privacy_training import config, labelled_folder, tiny_vlp  # noqa: F401 (pytest fixtures)

N, M = 32, 48
GROWTHS = [{"cltg_sites": "official+rgb"}, {"cltg_latent": True},
           {"cltg_sites": "official+rgb", "cltg_latent": True, "cltg_scales": True}]


def bias_only_weights(path, seed: int = 0):
    """Weights as the bundled ones are recorded: "blocks" biases only, their config without the new keys. Returns
    their info and the model saved."""
    torch.manual_seed(seed)
    model = build_backbone("mean-scale-hyperprior", N=N, M=M).eval()
    model.update(force=True)
    recorded = {k: v for k, v in model.config.items() if k not in ("cltg_sites", "cltg_latent")}
    model.config, full_config = recorded, model.config
    save_weights(model, path, name="bias-only")
    model.config = full_config
    return describe(path), model


def new_parameters(model) -> list[torch.nn.Parameter]:
    """The parameters the trigger options add: CLTG's extra-site MLP and the latent trigger."""
    g_s = model.g_s
    modules = [m for m in (g_s.cltg.extra, g_s.latent_trigger) if m is not None]
    return [p for m in modules for p in m.parameters()]


def randomise(parameters, seed: int = 5):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in parameters:
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)


def decodings(model, x) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model(x)["x_hat"]


def test_default_synthesis_adds_one_bias_after_each_deconvolution_as_before():
    torch.manual_seed(0)
    model = build_backbone("mean-scale-hyperprior", N=N, M=M).eval()
    g_s = model.g_s
    assert model.config["cltg_sites"] == "blocks" and model.config["cltg_latent"] is False
    assert g_s.cltg.extra is None and g_s.latent_trigger is None
    assert {k.split(".")[0] for k in g_s.cltg.state_dict()} == {"features", "mlp"}
    y_hat = torch.randn(2, M, 4, 5)
    for condition in ("protect", "full"):
        c = condition_tensor(condition).expand(2)
        with torch.no_grad():
            biases = g_s.cltg.mlp(g_s.cltg.features(c)).split([N, N, N, 3], dim=1)
            expected = y_hat
            for deconv_layer, activation, bias in zip(g_s.deconvs, g_s.activations, biases):
                expected = activation(deconv_layer(expected) + bias[:, :, None, None])
            assert torch.equal(g_s(y_hat, condition_tensor(condition)), expected)


def test_weights_recorded_without_the_new_keys_load_strictly_and_decode_as_saved(tmp_path):
    info, saved = bias_only_weights(tmp_path / "bias.safetensors")
    assert "cltg_sites" not in info.config and "cltg_latent" not in info.config
    loaded = instantiate(info).eval()
    assert loaded.config["cltg_sites"] == "blocks" and loaded.config["cltg_latent"] is False
    x = torch.rand(1, 3, 64, 64)
    expected, actual = decodings(saved, x), decodings(loaded, x)
    assert all(torch.equal(expected[c], actual[c]) for c in expected)


@pytest.mark.parametrize("grow", GROWTHS, ids=lambda g: "+".join(f"{k}={v}" for k, v in g.items()))
def test_grown_options_decode_exactly_like_the_init_until_their_parameters_change(tmp_path, grow):
    info, _ = bias_only_weights(tmp_path / "bias.safetensors", seed=1)
    plain, grown = instantiate(info).eval(), instantiate(info, grow=grow).eval()
    assert {k: grown.config[k] for k in grow} == grow
    x = torch.rand(1, 3, 64, 64)
    expected, actual = decodings(plain, x), decodings(grown, x)
    assert all(torch.equal(expected[c], actual[c]) for c in expected)
    stream = plain.compress(x)
    with torch.no_grad():
        for condition in ("protect", "full"):
            decoded = grown.decompress(stream["strings"], stream["shape"], condition)["x_hat"]
            assert torch.equal(decoded, plain.decompress(stream["strings"], stream["shape"], condition)["x_hat"])

    randomise(new_parameters(grown))
    changed = decodings(grown, x)
    assert not torch.equal(changed["protect"], expected["protect"])
    assert not torch.allclose(changed["protect"], changed["full"], atol=1e-3)
    # the latent trigger is gated to the protected decoding; the extra bias sites serve both conditions
    assert torch.equal(changed["full"], expected["full"]) == (grow == {"cltg_latent": True})
    assert grown.compress(x)["strings"] == stream["strings"]  # the bitstream ignores the condition path


@pytest.mark.parametrize("backbone", ["scale-hyperprior", "mean-scale-hyperprior", "checkerboard-hyperprior"])
def test_every_backbone_takes_the_options_and_records_them(backbone):
    torch.manual_seed(0)
    model = build_backbone(backbone, N=N, M=M, cltg_sites="official+rgb", cltg_latent=True).eval()
    assert model.config["cltg_sites"] == "official+rgb" and model.config["cltg_latent"] is True
    randomise(new_parameters(model))
    model.update(force=True)
    x = torch.rand(1, 3, 64, 64)
    stream = model.compress(x)
    with torch.no_grad():
        protect, full = (model.decompress(stream["strings"], stream["shape"], c)["x_hat"] for c in ("protect", "full"))
    assert not torch.equal(protect, full)


def test_the_latent_trigger_differs_per_image_and_per_position():
    torch.manual_seed(0)
    g_s = build_backbone("mean-scale-hyperprior", N=N, M=M, cltg_latent=True).g_s
    randomise(g_s.latent_trigger.parameters())
    y_hat = torch.randn(2, M, 4, 4)
    features = g_s.cltg.features(condition_tensor("protect").expand(2))
    with torch.no_grad():
        protect = g_s.latent_trigger(y_hat, features, torch.ones(2))
        full = g_s.latent_trigger(y_hat, features, torch.zeros(2))
    assert not torch.allclose(protect[0], protect[1])
    assert not torch.allclose(protect[0, :, 0, 0], protect[0, :, 2, 3])
    assert torch.count_nonzero(full) == 0


def test_official_sites_put_no_bias_on_the_rgb_output_and_do_not_grow_onto_blocks_weights(tmp_path):
    torch.manual_seed(0)
    model = build_backbone("mean-scale-hyperprior", N=N, M=M, cltg_sites="official").eval()
    cltg = model.g_s.cltg
    assert cltg.block_channels == [N, N, N] and cltg.extra_channels == [M, N, N, N]
    x = torch.rand(1, 3, 64, 64)
    before = decodings(model, x)
    randomise(new_parameters(model))
    after = decodings(model, x)
    assert not torch.equal(before["protect"], after["protect"])
    info, _ = bias_only_weights(tmp_path / "bias.safetensors")
    with pytest.raises(PsicModelError, match="do not match"):
        instantiate(info, grow={"cltg_sites": "official"})
    with pytest.raises(ValueError, match="unknown CLTG sites"):
        build_backbone("mean-scale-hyperprior", N=N, M=M, cltg_sites="everywhere")


def test_config_checks_the_site_names(tmp_path):
    with pytest.raises(ValueError, match="model.cltg_sites must be one of blocks, official, official"):
        load_config(None, ["model.cltg_sites=everywhere"])
    assert load_config(None, ["model.cltg_latent=true"])["model"]["cltg_latent"] is True


@pytest.mark.parametrize("options,grown", [({"cltg_sites": "official+rgb"}, True), ({"cltg_latent": True}, True),
                                           ({"cltg_sites": "official"}, False)],
                         ids=["official+rgb-grown", "latent-grown", "official-from-scratch"])
def test_two_training_steps_with_each_option_export_weights_that_load(labelled_folder, tiny_vlp, tmp_path,  # noqa: F811
                                                                     options, grown):
    cfg = config(labelled_folder, tiny_vlp, tmp_path, stages=[2], max_steps=[2], minutes=[60.0], lr=[1e-3])
    if grown:
        cfg["model"]["init"] = str(bias_only_weights(tmp_path / "init.safetensors")[0].path)
    cfg["model"].update(options)
    info = describe(train(cfg))
    assert {k: info.config[k] for k in options} == options
    model = instantiate(info).eval()
    assert all(p.abs().sum() > 0 for p in new_parameters(model)[-2:])  # the zero-initialised last layer trained
    x = torch.rand(1, 3, 64, 64)
    stream = model.compress(x)
    with torch.no_grad():
        decoded = model.decompress(stream["strings"], stream["shape"], "protect")
    assert decoded["latent_digest"] == stream["latent_digest"] and decoded["x_hat"].shape == x.shape
