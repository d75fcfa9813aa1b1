"""Training checkpoints: model weights and optimiser moments in one safetensors file (no pickles), progress in
its metadata. Kept outside git; rerunning a trainer with the same checkpoint path resumes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def save_checkpoint(path: Path, model, optimizers: dict, progress: dict):
    names = {id(p): n for n, p in model.named_parameters()}
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    for label, opt in optimizers.items():
        for group in opt.param_groups:
            for p in group["params"]:
                for key, value in opt.state.get(p, {}).items():
                    if torch.is_tensor(value):
                        tensors[f"{label}.{names[id(p)]}.{key}"] = value.detach().contiguous()
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"progress": json.dumps(progress)})
    os.replace(tmp, path)


def load_checkpoint(path: Path, model, optimizers: dict) -> dict:
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    params = dict(model.named_parameters())
    for label, opt in optimizers.items():
        for key, value in tensors.items():
            if key.startswith(label + "."):
                name, state_key = key[len(label) + 1 :].rsplit(".", 1)
                opt.state[params[name]][state_key] = value
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["progress"])
