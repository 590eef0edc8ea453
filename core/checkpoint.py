"""Training checkpoints without pickle: weights and optimizer tensors in safetensors, everything else in JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .model import WEIGHTS_FILE, Transformer

OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"


def save_checkpoint(directory: Path, model: Transformer, optimizer: torch.optim.Optimizer, trainer_state: dict) -> None:
    """Write model, optimizer and trainer state into directory atomically (a temporary folder, then a rename)."""
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    optimizer_state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, parameter_state in optimizer_state["state"].items():
        for key, value in parameter_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{key}"] = value
    save_file(tensors, str(partial / OPTIMIZER_FILE))
    state = {"trainer": trainer_state, "param_groups": optimizer_state["param_groups"], "optimizer_scalars": scalars}
    (partial / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)


def load_checkpoint(directory: Path, model: Transformer, optimizer: torch.optim.Optimizer) -> dict:
    """Restore model and optimizer from a checkpoint folder; return the trainer state dict."""
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    state = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    per_parameter: dict[int, dict] = {}
    for key, tensor in load_file(str(directory / OPTIMIZER_FILE)).items():
        index, name = key.split(".", 1)
        per_parameter.setdefault(int(index), {})[name] = tensor
    for key, value in state["optimizer_scalars"].items():
        index, name = key.split(".", 1)
        per_parameter.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": per_parameter, "param_groups": state["param_groups"]})
    return state["trainer"]


def average_weights(directories: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the weights in several checkpoint folders."""
    total: dict[str, torch.Tensor] = {}
    for directory in directories:
        for name, tensor in load_file(str(directory / WEIGHTS_FILE)).items():
            total[name] = total.get(name, 0) + tensor.double()
    return {name: (tensor / len(directories)).float() for name, tensor in total.items()}
