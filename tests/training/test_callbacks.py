"""The run's callbacks: validation images to TensorBoard, the progress bar over generator updates
with the health word, the final validation, and the discriminator contract check."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from advtune.config import ConfigError
from advtune.training import AdversarialModule
from advtune.training.callbacks import (FinalValidation, ValidationImages, ValidationKeepsRandomState,
                                        check_discriminator_output)
from advtune.training.progress import ProgressBar


class _Status(Callback):
    status_word = "D winning"


@pytest.fixture
def module_and_data(toy):
    task, disc, data = toy()
    calls = []

    def validation_epoch_end(output_dir, step):
        calls.append(step)
        task.validation_images = {"samples/grid": torch.rand(3, 6, 6), "samples/grey": torch.rand(1, 4, 4)}
        return {}

    task.validation_epoch_end = validation_epoch_end
    task.validation_step = lambda batch: {}
    data.val_dataloader = lambda: DataLoader(data.dataset, batch_size=8)
    return AdversarialModule(task, disc), data, calls


def test_images_reach_tensorboard_and_the_bar_counts_generator_updates(module_and_data, trainer_factory, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    module, data, calls = module_and_data
    bar, final = ProgressBar(), FinalValidation()
    trainer = trainer_factory(max_steps=5, limit_val_batches=1, val_check_interval=1000, check_val_every_n_epoch=None,
                              enable_progress_bar=True,
                              logger=TensorBoardLogger(str(tmp_path), name="tb", version=""),
                              callbacks=[bar, ValidationImages(), _Status(), final])
    trainer.fit(module, datamodule=data)
    assert calls == [0, 5] and final.last_validated_step == 5  # sanity check, then the last step and not final.needs_validation(trainer)
    assert module.task.validation_images == {}  # sent, then cleared
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert sorted(events.Tags()["images"]) == ["samples/grey", "samples/grid"]
    assert [e.step for e in events.Images("samples/grid")] == [5]  # not the sanity check's
    task = bar.progress.tasks[bar.train_progress_bar_id]
    assert "generator updates" in task.description and (task.completed, task.total) == (5, 5)
    assert bar.get_metrics(trainer, module)["status"] == "D winning"


def test_the_bar_redraws_at_most_every_min_interval_and_at_the_last_update(module_and_data, trainer_factory):
    module, data, _ = module_and_data
    redrawn = []

    class CountingBar(ProgressBar):
        min_interval_s = 3600.0  # nothing between the first and the last update

        def _update(self, progress_bar_id, current):
            redrawn.append(current)
            return super()._update(progress_bar_id, current)

    trainer = trainer_factory(max_steps=6, limit_val_batches=0, enable_progress_bar=True, callbacks=[CountingBar()])
    trainer.fit(module, datamodule=data)
    assert redrawn == [1, 6]


class _RandomStates(Callback):
    def __init__(self) -> None:
        self.at_start, self.at_end = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.at_start.append(torch.get_rng_state())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.at_end.append(torch.get_rng_state())


@pytest.mark.parametrize("neutral", [True, False])
def test_validation_leaves_training_the_random_state_it_had(module_and_data, trainer_factory, neutral):
    module, data, _ = module_and_data
    module.task.validation_step = lambda batch: {"val/noise": torch.rand(())}
    states = _RandomStates()
    callbacks = [states] + ([ValidationKeepsRandomState()] if neutral else [])
    trainer_factory(max_steps=3, limit_val_batches=2, val_check_interval=1, num_sanity_val_steps=0,
                    callbacks=callbacks).fit(module, datamodule=data)
    # A validation runs after every batch; the next batch starts from the state the last one ended with.
    unchanged = [torch.equal(end, start) for end, start in zip(states.at_end, states.at_start[1:])]
    assert unchanged == [neutral, neutral]


@pytest.mark.parametrize(("output", "problem"), [
    (torch.zeros(4, 1), "returned a tensor of shape (4, 1), not a (logits, features) pair"),
    ((torch.zeros(4, 1), []), "logits must be a non-empty list of tensors"),
    (([torch.zeros(4, 1)], []), "features must be a list of 1 lists of tensors"),
    (([torch.zeros(4, 1), torch.zeros(4, 1)], [[], [torch.zeros(4)]]), None),
    (([torch.zeros(1, 4)], [[]]), "logits[0] has shape (1, 4); the batch dimension (4) must come first"),
    (([torch.zeros(())], [[]]), "logits[0] has shape ()"),
])
def test_discriminator_contract(output, problem):
    if problem is None:
        check_discriminator_output(output, 4, "D")
        return
    with pytest.raises(ConfigError) as error:
        check_discriminator_output(output, 4, "D")
    assert str(error.value).startswith("discriminator D breaks the output contract: ") and problem in str(error.value)


def test_a_run_validated_only_every_few_epochs_still_ends_validated(tmp_path, gan_overrides):
    """Lightning validates on the requested stop only in a validation epoch; the runner then
    validates once more after fit, so the run still ends with metrics and a grid of its last step."""
    from advtune.config import compose_config
    from advtune.runner import train

    overrides = gan_overrides(tmp_path, **{"trainer.max_steps": 7, "trainer.check_val_every_n_epoch": 5,
                                           "trainer.val_check_interval": "null"})
    metrics = train(compose_config(overrides))
    assert "val/fid_digits" in metrics
    assert [p.name for p in (tmp_path / "samples").iterdir()] == ["samples_step000007.png"]
