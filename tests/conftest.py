"""Shared fixtures: an isolated outputs folder and a small source model saved as tickets."""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("SPARSE_VP_NO_PROGRESS", "1")


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    """Records, caches and figures of the test go to a temporary outputs folder."""
    monkeypatch.setenv("SPARSE_VP_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("SPARSE_VP_DATA", str(tmp_path / "data"))
    return tmp_path / "outputs"


@pytest.fixture(scope="session")
def tickets(tmp_path_factory):
    """A randomly initialised cifar_resnet_20 with 45 outputs, as dense + ticket + random files.

    Transfer tests need real ticket files in the paper's format, not a trained source.
    """
    from lib.backbone import Mask, apply_mask, create_backbone, save_ticket, ticket_paths
    from lib.data import GLYPH_CLASSES
    from lib.prune import prune, random_prune

    folder = tmp_path_factory.mktemp("tickets")
    torch.manual_seed(0)
    model = create_backbone("cifar_resnet_20", num_classes=45)
    mask = Mask.ones_like(model)
    save_ticket(model, mask, *ticket_paths(folder, "cifar_resnet_20", 0))
    for state in (1, 2):
        mask = prune(model, mask, 0.2)
        apply_mask(model, mask)
        save_ticket(model, mask, *ticket_paths(folder, "cifar_resnet_20", state))
        rand = random_prune(Mask.ones_like(model), 1 - 0.8**state, seed=state)
        rand_model = create_backbone("cifar_resnet_20", num_classes=45)
        apply_mask(rand_model, rand)
        save_ticket(rand_model, rand, *ticket_paths(folder, "cifar_resnet_20", state, "random"))
    (folder / "classes.json").write_text(json.dumps(list(GLYPH_CLASSES)))
    return folder
