"""Save and load whole models (generator + config) safely.

A saved file is a plain ``torch.save`` dictionary holding only tensors, numbers, strings, lists and
dicts, so it loads with ``torch.load(path, weights_only=True)``: nothing in the file is ever
unpickled into an arbitrary object. The class to rebuild is looked up *by name* in an allow-list
(:func:`register_model`), never imported from a string found in the file. Writing is in
:mod:`advtune.io.saving`, reading in :mod:`advtune.io.loading`.

File layout (``FORMAT_VERSION`` 1)::

    {"format_version": 1, "model_class": "AudioVAE", "model_config": {...constructor kwargs...},
     "model_state_dict": {...}, "latent_statistics": {"latent_mean": T, "latent_std": T} | None,
     "encoder_frozen": bool | None, "optimizer_state_dict": ... | None,
     "scheduler_state_dict": ... | None, "epoch": int | None, "global_step": int | None,
     "metadata": dict | None}
"""

from advtune.io.loading import load_from_lightning_checkpoint, load_model, load_training_state
from advtune.io.saving import (FORMAT_VERSION, attach_model_to_checkpoint, register_model, registered_models,
                               save_model)

__all__ = [
    "FORMAT_VERSION",
    "register_model",
    "registered_models",
    "save_model",
    "load_model",
    "load_training_state",
    "load_from_lightning_checkpoint",
    "attach_model_to_checkpoint",
]
