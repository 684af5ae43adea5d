"""save_model / load_model: round trip, training state, Lightning conversion, safety."""

import pickle

import lightning
import pytest
import torch
from torch import nn

from advtune.io import saving
from advtune.io import (
    attach_model_to_checkpoint,
    load_from_lightning_checkpoint,
    load_model,
    load_training_state,
    register_model,
    save_model,
)
from advtune.models.audio_vae import AudioVAE


def tiny_vae() -> AudioVAE:
    return AudioVAE(in_channels=1, base_channels=4, channel_mults=[1, 2], strides=[2, 2],
                    latent_dim=2, kernel_size=3, dilations=[1])


def trained_vae() -> AudioVAE:
    torch.manual_seed(0)
    vae = tiny_vae()
    vae(torch.randn(2, 1, 64))  # training-mode forward: latent statistics move off 0 / 1
    return vae


def test_save_load_gives_identical_outputs_config_and_statistics(tmp_path):
    vae = trained_vae()
    vae.encoder_frozen = True
    path = save_model(vae, tmp_path / "sub" / "vae.pt", metadata={"sample_rate": 8000})
    loaded = load_model(path)
    assert type(loaded) is AudioVAE and not loaded.training
    assert loaded.model_config == vae.model_config
    assert loaded.encoder_frozen and not any(p.requires_grad for p in loaded.encoder.parameters())
    torch.testing.assert_close(loaded.latent_mean, vae.latent_mean)
    torch.testing.assert_close(loaded.latent_std, vae.latent_std)
    audio = torch.randn(2, 1, 40)
    torch.testing.assert_close(loaded(audio)[0], vae.eval()(audio)[0])
    raw = torch.load(path, weights_only=True)  # the file is plain tensors and containers
    assert {"model_state_dict", "model_config", "latent_statistics", "encoder_frozen",
            "optimizer_state_dict", "scheduler_state_dict", "epoch", "global_step",
            "metadata"} <= set(raw)
    torch.testing.assert_close(raw["latent_statistics"]["latent_mean"], vae.latent_mean)
    assert raw["metadata"] == {"sample_rate": 8000} and raw["model_class"] == "AudioVAE"


def test_load_training_state_restores_optimizer_and_scheduler(tmp_path):
    vae = trained_vae()
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    for _ in range(3):
        vae(torch.randn(2, 1, 32))[0].square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    path = save_model(vae, tmp_path / "vae.pt", optimizer.state_dict(), scheduler.state_dict(),
                      epoch=4, global_step=3, metadata={"note": "x"})
    fresh = load_model(path)
    new_optimizer = torch.optim.Adam(fresh.parameters(), lr=1e-2)
    new_scheduler = torch.optim.lr_scheduler.StepLR(new_optimizer, step_size=2, gamma=0.5)
    state = load_training_state(path, new_optimizer, new_scheduler)
    assert (state["epoch"], state["global_step"], state["metadata"]) == (4, 3, {"note": "x"})
    assert new_scheduler.state_dict() == scheduler.state_dict()
    assert new_optimizer.param_groups[0]["lr"] == pytest.approx(5e-3)
    old, new = optimizer.state_dict()["state"], new_optimizer.state_dict()["state"]
    assert old.keys() == new.keys()
    for key in old:
        torch.testing.assert_close(new[key]["exp_avg"], old[key]["exp_avg"])
        assert int(new[key]["step"]) == 3


def test_load_training_state_without_optimizer_state_raises(tmp_path):
    path = save_model(tiny_vae(), tmp_path / "vae.pt")
    optimizer = torch.optim.SGD(tiny_vae().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="optimizer_state_dict"):
        load_training_state(path, optimizer)


class _Holder(lightning.LightningModule):
    """A minimal LightningModule that owns a registered model, as advtune's modules do."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_vae()

    def training_step(self, batch, batch_idx):
        return self.net(batch[0])[0].square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def on_save_checkpoint(self, checkpoint):
        attach_model_to_checkpoint(checkpoint, self)


def test_lightning_checkpoint_converts(tmp_path):
    torch.manual_seed(0)
    holder = _Holder()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 1, 32)), batch_size=2)
    trainer = lightning.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False,
                                default_root_dir=tmp_path)
    trainer.fit(holder, data)
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    raw = torch.load(tmp_path / "run.ckpt", weights_only=True)
    assert raw["model_config"] == holder.net.model_config and raw["advtune_model_prefix"] == "net."
    model = load_from_lightning_checkpoint(tmp_path / "run.ckpt")
    audio = torch.randn(1, 1, 32)
    torch.testing.assert_close(model(audio)[0], holder.net.eval()(audio)[0])
    # load_model recognises a Lightning checkpoint too
    torch.testing.assert_close(load_model(tmp_path / "run.ckpt")(audio)[0], model(audio)[0])


def test_old_style_file_error_names_the_fix(tmp_path):
    vae = tiny_vae()
    torch.save(vae.state_dict(), tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"^Checkpoint does not contain 'model_config'.*save_model"):
        load_model(tmp_path / "old.pt")
    with pytest.raises(ValueError, match="Checkpoint does not contain 'model_config'"):
        load_from_lightning_checkpoint(tmp_path / "old.pt")


class _Payload:
    """Unpickling this creates the file at ``marker``: a stand-in for arbitrary code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_refused_without_running_payload(tmp_path):
    # The payload is real: plain unpickling runs it.
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Payload(str(proof)))).close()
    assert proof.exists()
    def legacy_pickle(obj, path):
        with open(path, "wb") as handle:
            pickle.dump(obj, handle)

    for name, writer in (("zip.pt", torch.save), ("legacy.pt", legacy_pickle)):
        marker = tmp_path / f"pwned_{name}"
        writer({"model_config": {}, "model_class": "AudioVAE", "model_state_dict": _Payload(str(marker))},
               tmp_path / name)
        with pytest.raises(ValueError, match="never unpickles arbitrary objects"):
            load_model(tmp_path / name)
        with pytest.raises(ValueError, match="never unpickles"):
            load_from_lightning_checkpoint(tmp_path / name)
        assert not marker.exists()


def test_class_not_in_allow_list_refused(tmp_path):
    path = save_model(tiny_vae(), tmp_path / "vae.pt")
    payload = torch.load(path, weights_only=True)
    payload["model_class"] = "os.system"
    torch.save(payload, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="allow-list"):
        load_model(tmp_path / "evil.pt")


def test_register_model_rules_and_user_models(tmp_path):
    with pytest.raises(TypeError, match="nn.Module"):
        register_model(int)

    @register_model
    class UserNet(nn.Module):
        def __init__(self, width: int = 2) -> None:
            super().__init__()
            self.model_config = {"width": width}
            self.layer = nn.Linear(width, 1)

    try:
        model = UserNet(width=3)
        loaded = load_model(save_model(model, tmp_path / "user.pt"))
        torch.testing.assert_close(loaded.layer.weight, model.layer.weight)

        class Other(nn.Module):
            pass

        Other.__name__ = "UserNet"
        with pytest.raises(ValueError, match="already registered"):
            register_model(Other)
    finally:
        saving._REGISTRY.pop("UserNet", None)


def test_save_refuses_unregistered_and_non_json(tmp_path):
    class Plain(nn.Module):
        model_config = {}

    with pytest.raises(ValueError, match="not registered"):
        save_model(Plain(), tmp_path / "x.pt")
    with pytest.raises(TypeError, match="metadata"):
        save_model(tiny_vae(), tmp_path / "x.pt", metadata={"f": object()})


def test_public_import_paths_and_the_split_modules_agree():
    """``advtune.io`` re-exports the writing and reading halves (the split kept every public name)."""
    import advtune.io as package
    from advtune.io import loading

    assert package.save_model is saving.save_model and package.load_model is loading.load_model
    assert set(package.__all__) == set(saving.__all__) | set(loading.__all__)
