"""Shared fixtures: an isolated outputs folder, a small source model saved as tickets, and
one tiny-config factory for runs on them."""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("SPARSE_VP_NO_PROGRESS", "1")

# The fixture's tickets have ExperimentConfig's default architecture (the shipped tickets'),
# so a config or params file that does not name an arch finds them.
TICKET_ARCH = "cifar_resnet_20_8"
# The smallest run that still exercises everything: digits, a few shots, two epochs.
TINY = dict(dataset="digits", epochs=2, n_shot=5, train_pool=100, max_val=20, max_test=30)
# The same as a params file's defaults: one LP notebook execution of quick runs.
SMALL = {**TINY, "method": "lp", "network": "dense", "n_shot": 3}


def refused(capsys, argv: list[str], *messages: str, cli=None) -> str:
    """The command line `cli` (default: python -m lib.sweep's) exits 2 with one line on
    stderr (below argparse's usage, if it prints one) matching every regex of `messages`."""
    import re
    import sys

    if cli is None:
        from lib.study.sweep import cli
    saved = sys.argv
    sys.argv = ["prog", *argv]
    try:
        with pytest.raises(SystemExit) as info:
            cli()
    finally:
        sys.argv = saved
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2, err
    lines = [line for line in err.splitlines() if not line.startswith(("usage:", " "))]
    assert len(lines) == 1 and "Traceback" not in err, err
    for message in messages:
        assert re.search(message, lines[0]), lines[0]
    return lines[0]


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    """Records, caches and figures of the test go to a temporary outputs folder."""
    monkeypatch.setenv("SPARSE_VP_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("SPARSE_VP_DATA", str(tmp_path / "data"))
    return tmp_path / "outputs"


@pytest.fixture(scope="session")
def tickets(tmp_path_factory):
    """A randomly initialised TICKET_ARCH with 45 outputs, as dense + ticket + random files.

    Transfer tests need real ticket files in the paper's format, not a trained source.
    """
    from lib.datasets.registry import GLYPH_CLASSES
    from lib.models.backbone import Mask, apply_mask, create_backbone, save_ticket, ticket_paths
    from lib.models.prune import prune, random_prune

    folder = tmp_path_factory.mktemp("tickets")
    torch.manual_seed(0)
    model = create_backbone(TICKET_ARCH, num_classes=45)
    mask = Mask.ones_like(model)
    save_ticket(model, mask, *ticket_paths(folder, TICKET_ARCH, 0))
    for state in (1, 2):
        mask = prune(model, mask, 0.2)
        apply_mask(model, mask)
        save_ticket(model, mask, *ticket_paths(folder, TICKET_ARCH, state))
        rand = random_prune(Mask.ones_like(model), 1 - 0.8**state, seed=state)
        rand_model = create_backbone(TICKET_ARCH, num_classes=45)
        apply_mask(rand_model, rand)
        save_ticket(rand_model, rand, *ticket_paths(folder, TICKET_ARCH, state, "random"))
    (folder / "classes.json").write_text(json.dumps(list(GLYPH_CLASSES)))
    return folder


@pytest.fixture
def tiny_config(tickets):
    """Factory of small ExperimentConfigs on the `tickets` fixture: TINY, then the keywords
    given; `functools.partial(tiny_config, study="c")` gives a test file its own defaults."""
    from lib.study.config import ExperimentConfig

    def make(**overrides) -> ExperimentConfig:
        return ExperimentConfig(**{**TINY, "pretrained_dir": str(tickets), **overrides})

    assert ExperimentConfig.arch == TICKET_ARCH  # the default finds the fixture's files
    return make
