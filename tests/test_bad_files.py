"""Bad checkpoint, mask and record files are refused through the user-facing path
(run_experiments -> load_lottery_ticket), with a message naming the file and the problem,
and leave no record behind."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch

from lib.models.backbone import (
    CheckpointError,
    Mask,
    create_backbone,
    load_lottery_ticket,
    save_ticket,
    ticket_paths,
)
from lib.study import results
from lib.study.config import ExperimentConfig
from lib.study.experiment import run_experiments

ARCH = "cifar_resnet_20_8"  # the arch of the tickets fixture


class CreatesFile:
    """Unpickling this calls open(marker, "w"): a stand-in for code a hostile file would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def folder(tickets, tmp_path):
    """A private copy of the ticket files, free to damage."""
    return shutil.copytree(tickets, tmp_path / "tickets")


def _paths(folder, state=1):
    return ticket_paths(folder, ARCH, state)


def _run(folder, **kw):
    cfg = ExperimentConfig(
        study="t",
        dataset="digits",
        pretrained_dir=str(folder),
        network="ticket",
        sparsity=1,
        method="lp",
        epochs=1,
        n_shot=5,
        max_val=20,
        train_pool=100,
        max_test=30,
        **kw,
    )
    return run_experiments([cfg])


def _rejected(outputs, folder, bad_file, problem):
    with pytest.raises(CheckpointError, match=problem) as info:
        _run(folder)
    assert str(bad_file) in str(info.value)  # the message names the file
    assert not (outputs / "t" / "records").exists() and not (outputs / "t" / "artifacts").exists()
    return info.value


def test_truncated_checkpoint(outputs, folder):
    ckpt, _ = _paths(folder)
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    _rejected(outputs, folder, ckpt, "unreadable, truncated or corrupted")


def test_flipped_bytes_inside_a_tensor(outputs, folder):
    # torch.load alone accepts this file and returns wrong weights: the zip checksums catch it
    ckpt, mask_path = _paths(folder)
    data = bytearray(ckpt.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    ckpt.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted file: checksum mismatch"):
        load_lottery_ticket(ARCH, ckpt, mask_path)
    _rejected(outputs, folder, ckpt, "checksum mismatch")


def test_mask_of_other_shapes(outputs, folder):
    _, mask_path = _paths(folder)
    mask = torch.load(mask_path, weights_only=True)
    mask["model.blocks.0.conv1.weight"] = torch.ones(16, 16, 1, 1)
    torch.save(mask, mask_path)
    error = _rejected(outputs, folder, mask_path, r"blocks\.0\.conv1\.weight.? \(16, 16, 1, 1\)")
    assert "(8, 8, 3, 3)" in str(error)  # and the shape the checkpoint has (width 8)


def test_mask_with_values_other_than_0_and_1(outputs, folder):
    _, mask_path = _paths(folder)
    mask = torch.load(mask_path, weights_only=True)
    mask["model.fc.weight"] = mask["model.fc.weight"] * 0.5  # a soft mask, not a 0/1 one
    torch.save(mask, mask_path)
    _rejected(outputs, folder, mask_path, "'fc.weight' has values other than 0 and 1")


def test_ticket_of_another_architecture(outputs, folder):
    ckpt, mask_path = _paths(folder)
    other = create_backbone("cifar_resnet_32_8", num_classes=45)  # a ticket pair of another net
    save_ticket(other, Mask.ones_like(other), ckpt, mask_path)
    error = _rejected(
        outputs, folder, ckpt, r"does not fit CifarResNet: .*unexpected keys: blocks\.10\."
    )
    assert "shape mismatches (file vs model): blocks.3.conv1.weight (8, 8, 3, 3)" in str(error)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("which", ["checkpoint", "mask"])
@pytest.mark.parametrize("container", ["torch", "pickle-2", "pickle-4"])
def test_file_that_would_run_code_is_refused(outputs, folder, tmp_path, which, container):
    marker = tmp_path / "code-ran"
    target = _paths(folder)[0 if which == "checkpoint" else 1]
    payload = {"model.fc.weight": CreatesFile(marker)}
    if container == "torch":
        torch.save(payload, target)
    else:  # the pre-1.6 format: a bare pickle
        target.write_bytes(pickle.dumps(payload, protocol=int(container[-1])))
    error = _rejected(outputs, folder, target, "refused to load: ")
    if container != "pickle-4":  # protocol 4 is refused at its first opcode, before the call
        assert "could run code when unpickled" in str(error) and "open" in str(error)
    assert not marker.exists()
    # the payload is live: a loader without weights_only would have created the file
    if container == "torch":
        torch.load(target, weights_only=False)
    else:
        pickle.loads(target.read_bytes())
    assert marker.exists()


def test_sparse_checkpoint_file_is_checked_too(outputs, folder):
    ckpt, _ = _paths(folder)
    ckpt.write_bytes(ckpt.read_bytes()[:-100])  # an interrupted copy
    cfg = ExperimentConfig(
        study="t", dataset="digits", network="sparsezoo", checkpoint=str(ckpt), method="lp"
    )
    with pytest.raises(CheckpointError, match="unreadable, truncated or corrupted") as info:
        run_experiments([cfg])
    assert str(ckpt) in str(info.value)
    assert not (outputs / "t" / "records").exists()


def test_damaged_record_is_named(outputs):
    record = {"run_key": "r1", "study": "t", "params": {"seed": 1}, "metrics": {}}
    results.write_record(record)
    path = results.record_path("t", "r1")
    path.write_text(json.dumps(record)[:20])  # e.g. a copy cut short
    with pytest.raises(ValueError, match=r"r1\.json: corrupt record .*delete it to re-run"):
        results.write_results_csv("t")
