"""Parity with ILM-VP (Chen et al., CVPR 2023): the project's VP loop against a plain
re-implementation of the paper's experiments/cnn/ilm_vp.py written here.

The reference follows the paper's code: per epoch, the frequency label mapping
(generate_label_mapping_by_frequency: argmax source class counts per target class, greedy
global maximum) is recomputed with the current prompt over the training set; then the
prompt alone is trained with Adam (lr 0.01), cross-entropy on the mapped logits, and
MultiStepLR(milestones 50% and 72% of the epochs, gamma 0.1). AMP is off (CPU).

Both sides run the network in channels_last (the project's layout for speed): Adam's first
steps are about lr * sign(gradient), so float round-off that differs between convolution
layouts in near-zero gradients would grow into lr-sized differences of the prompt.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.functional import one_hot

from lib.adapt.labelmap import LabelMapper
from lib.adapt.prompt import ExpansiveVisualPrompt
from lib.adapt.train import PromptedClassifier, train_visual_prompt
from lib.datasets.registry import as_tensors, get_dataset
from lib.models.backbone import IMAGENET_MEAN, IMAGENET_STD, create_backbone, split_features

SOURCE, TARGET = 32, 24  # cifar_resnet_20 input; the mini datasets' inner image size
NUM_SOURCE, NUM_TARGET = 12, 10
BATCH, SEED = 16, 3


# ---------------------------------------------------------------- the paper's loop


class PaperPrompt(nn.Module):
    """ILM-VP's ExpansiveVisualPrompt: zero-pad, add sigmoid(program) * mask, normalize."""

    def __init__(self, out_size: int, in_size: int) -> None:
        super().__init__()
        self.program = nn.Parameter(torch.zeros(3, out_size, out_size))
        self.l_pad, self.r_pad = int((out_size - in_size + 1) / 2), int((out_size - in_size) / 2)
        pads = (self.l_pad, self.r_pad, self.l_pad, self.r_pad)
        self.register_buffer("mask", F.pad(torch.zeros(3, in_size, in_size), pads, value=1))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = (self.l_pad, self.r_pad, self.l_pad, self.r_pad)
        x = F.pad(x, pads, value=0) + torch.sigmoid(self.program) * self.mask
        return (x - self.mean) / self.std  # transforms.Normalize


def paper_frequency_mapping(prompt, network, images, labels) -> torch.Tensor:
    """generate_label_mapping_by_frequency with mapping_num=1."""
    network.eval()
    fx0s, ys = [], []
    for x, y in zip(images.split(BATCH), labels.split(BATCH), strict=True):
        with torch.no_grad():
            fx0s.append(network(prompt(x)))
        ys.append(y)
    fx0, y = torch.cat(fx0s).float(), torch.cat(ys).int()
    fx = one_hot(torch.argmax(fx0, dim=-1), num_classes=fx0.size(-1))
    dist_matrix = torch.cat([fx[y == i].sum(0).unsqueeze(1) for i in range(len(y.unique()))], 1)
    mapping_matrix = torch.zeros_like(dist_matrix, dtype=int)
    flat = dist_matrix.flatten()  # same memory
    for _ in range(dist_matrix.size(1)):
        loc = flat.argmax().item()
        s, t = loc // dist_matrix.size(1), loc % dist_matrix.size(1)
        mapping_matrix[s, t] = 1
        dist_matrix[s] = -1
        if mapping_matrix[:, t].sum() == 1:
            dist_matrix[:, t] = -1
    pairs = torch.nonzero(mapping_matrix)
    return pairs[:, 0][torch.sort(pairs[:, 1]).indices.tolist()]


def paper_ilm_vp(network, images, labels, epochs, lr=0.01):
    """ilm_vp.py's training loop; returns the mapping and the prompt program of every epoch."""
    prompt = PaperPrompt(SOURCE, TARGET)
    optimizer = torch.optim.Adam(prompt.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[int(0.5 * epochs), int(0.72 * epochs)], gamma=0.1
    )
    order = torch.Generator().manual_seed(SEED)  # the same shuffling generator as the project
    mappings, programs = [], []
    for _ in range(epochs):
        mapping = paper_frequency_mapping(prompt, network, images, labels)
        prompt.train()
        for index in torch.randperm(len(labels), generator=order).split(BATCH):
            x, y = images[index], labels[index]
            optimizer.zero_grad()
            fx = network(prompt(x))[:, mapping]  # label_mapping_base
            loss = F.cross_entropy(fx, y, reduction="mean")
            loss.backward()
            optimizer.step()
        scheduler.step()
        mappings.append(mapping.tolist())
        programs.append(prompt.program.detach().clone())
    return mappings, programs


# ---------------------------------------------------------------- a fixed tiny problem


@pytest.fixture(scope="module")
def problem():
    """64 digits (10 classes) at 24 px and a random cifar_resnet_20 with 12 outputs.

    A random network sends every image to one class (its head sees mostly the mean feature),
    which would leave nothing for the mapping to do; so BN statistics are set on the prompted
    images and the head is made blind to the mean feature: the argmax then varies by image.
    """
    images, labels = as_tensors(get_dataset("digits", "train", image_size=TARGET))
    images, labels = images[:64], labels[:64]
    assert len(labels.unique()) == NUM_TARGET
    torch.manual_seed(0)
    network = create_backbone("cifar_resnet_20", num_classes=NUM_SOURCE)
    inputs = PaperPrompt(SOURCE, TARGET)(images).detach()
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # one pass = exact batch statistics
    with torch.no_grad():
        network.train()(inputs)
        network.eval()
        features, head = split_features(network)
        mean = features(inputs).mean(0)
        mean /= mean.norm()
        head.weight -= (head.weight @ mean)[:, None] * mean[None, :]
        head.bias.zero_()
    network.requires_grad_(False)
    assert len(network(inputs).argmax(1).unique()) > NUM_TARGET // 2
    return network, images, labels


def project_ilm_vp(network, images, labels, epochs):
    prompt = ExpansiveVisualPrompt(SOURCE, TARGET, (IMAGENET_MEAN, IMAGENET_STD))
    mapper = LabelMapper("ilm", NUM_SOURCE, NUM_TARGET)
    model = PromptedClassifier(prompt, copy.deepcopy(network), mapper)
    data = (images, labels)
    fit = train_visual_prompt(model, data, data, epochs, 0.01, BATCH, SEED, 15, torch.device("cpu"))
    # fit records the mapping when it changes; spell it out per epoch.
    changed = {c["epoch"]: c["mapping"] for c in fit.mapping_changes}
    mappings, current = [], None
    for epoch in range(epochs):
        current = changed.get(epoch, current)
        mappings.append(current)
    return mappings, model, fit


def _paper_network(network: nn.Module) -> nn.Module:
    return copy.deepcopy(network).to(memory_format=torch.channels_last)


def test_ilm_vp_mapping_per_epoch_and_prompt_match_the_paper(problem):
    network, images, labels = problem
    epochs = 3  # learning rate 0.01, then 0.001 from epoch 1, 0.0001 from epoch 2
    ref_mappings, ref_programs = paper_ilm_vp(_paper_network(network), images, labels, epochs)
    mappings, model, fit = project_ilm_vp(network, images, labels, epochs)
    assert len({tuple(m) for m in ref_mappings}) > 1, "the mapping never changes: problem too easy"
    assert fit.best_epoch >= 1, "the compared prompt must come after a re-mapping and a milestone"
    assert mappings == ref_mappings
    # The project keeps the prompt of the best validation epoch: the paper's at that epoch.
    assert torch.allclose(model.prompt.delta.detach(), ref_programs[fit.best_epoch], atol=1e-6)
    assert torch.equal(model.mapper.mapping, torch.tensor(ref_mappings[fit.best_epoch]))


def test_prompt_after_one_optimizer_step_matches_the_paper(problem):
    network, images, labels = problem
    images, labels = images[:BATCH], labels[:BATCH]  # one batch: one step in one epoch
    # With one epoch both milestones are int(0.5) = int(0.72) = 0: the paper's schedule (and
    # the project's) trains at lr 0.01 * 0.1**2 from the start.
    (ref_mapping,), (ref_program,) = paper_ilm_vp(_paper_network(network), images, labels, 1)
    (mapping,), model, _ = project_ilm_vp(network, images, labels, 1)
    assert mapping == ref_mapping
    delta = model.prompt.delta.detach()
    assert delta.abs().max() > 0  # the step moved the prompt
    assert torch.allclose(delta, ref_program, atol=1e-6)
    assert torch.equal(delta == 0, model.prompt.mask == 0)  # only the border is learned
