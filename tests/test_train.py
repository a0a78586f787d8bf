"""LP and VP loops on real data (sklearn digits) with a randomly initialised source."""

import copy

import pytest
import torch

from lib.adapt.labelmap import LabelMapper
from lib.adapt.prompt import ExpansiveVisualPrompt
from lib.adapt.train import (
    Batches,
    Normalized,
    PromptedClassifier,
    evaluate,
    fold_batchnorm,
    freeze,
    train_linear_probe,
    train_visual_prompt,
)
from lib.datasets.registry import as_tensors, get_dataset
from lib.models.backbone import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Mask,
    apply_mask,
    create_backbone,
    split_features,
)
from lib.models.prune import prune

NORM = (IMAGENET_MEAN, IMAGENET_STD)


@pytest.fixture(scope="module")
def sparse_source():
    """Randomly initialised, half pruned; BN statistics set by one pass over digits.

    With untouched BN statistics a random net's logits barely depend on the input, and no
    prompt can move them; re-estimating the statistics (no weight is trained) fixes that.
    """
    torch.manual_seed(0)
    model = create_backbone("cifar_resnet_20", num_classes=45)
    mask = prune(model, Mask.ones_like(model), 0.5)
    apply_mask(model, mask)
    (x, _), _ = _digits(24)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the pass
    with torch.no_grad():
        model.train()(ExpansiveVisualPrompt(32, 24, NORM)(x[:512]))
    return freeze(model), mask


def _digits(size):
    train = as_tensors(get_dataset("digits", "train", image_size=size))
    test = as_tensors(get_dataset("digits", "test", image_size=size))
    return train, test


def _pruned_weights_are_zero(model, mask):
    params = dict(model.named_parameters())
    return all(bool((params[n][m == 0] == 0).all()) for n, m in mask.items())


def test_linear_probe_beats_chance_and_keeps_pruned_weights_zero(sparse_source):
    model, mask = sparse_source
    (x, y), (xt, yt) = _digits(32)
    features, _ = split_features(model)
    extractor = freeze(Normalized(features, 32, *NORM))
    train_f, _ = evaluate(extractor, Batches((x, y), 256), torch.device("cpu"))
    test_f, _ = evaluate(extractor, Batches((xt, yt), 256), torch.device("cpu"))
    head, fit = train_linear_probe(
        (train_f[:1200], y[:1200]), (train_f[1200:], y[1200:]), 10, epochs=20, seed=0
    )
    accuracy = (head(test_f).argmax(1) == yt).float().mean().item()
    assert accuracy > 0.35  # chance is 0.1
    assert len(fit.history) == 20 and 0 <= fit.best_epoch < 20
    assert fit.best_val_accuracy == max(h["val_accuracy"] for h in fit.history)
    assert _pruned_weights_are_zero(model, mask)


def test_visual_prompt_beats_chance_and_keeps_pruned_weights_zero(sparse_source):
    model, mask = sparse_source
    before = {k: v.clone() for k, v in model.state_dict().items()}
    (x, y), (xt, yt) = _digits(24)
    torch.manual_seed(0)
    prompt = ExpansiveVisualPrompt(32, 24, NORM)
    classifier = PromptedClassifier(prompt, model, LabelMapper("linear", 45, 10, seed=0))
    fit = train_visual_prompt(
        classifier, (x[:1200], y[:1200]), (x[1200:], y[1200:]), epochs=6, lr=0.05, seed=0
    )
    logits, labels = evaluate(classifier, Batches((xt, yt), 256), torch.device("cpu"))
    # The learned linear map reads the random source's logits (~0.6 here); ILM's one-to-one
    # map of a random source stays near chance. VP on a trained source is the study's job.
    assert (logits.argmax(1) == labels).float().mean().item() > 0.3  # chance is 0.1
    assert prompt.delta.abs().sum() > 0  # the prompt learned something
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # frozen
    assert _pruned_weights_are_zero(model, mask)
    assert [h["epoch"] for h in fit.history] == list(range(6))


def test_ilm_remaps_every_epoch_and_selection_restores_best_mapping(sparse_source):
    model, _ = sparse_source
    (x, y), _ = _digits(24)
    mapper = LabelMapper("ilm", 45, 10, seed=0)
    classifier = PromptedClassifier(ExpansiveVisualPrompt(32, 24, NORM), model, mapper)
    fit = train_visual_prompt(
        classifier, (x[:300], y[:300]), (x[300:500], y[300:500]), epochs=3, seed=0
    )
    assert fit.mapping_changes and fit.mapping_changes[0]["epoch"] == 0
    assert mapper.mapping is not None and len(set(mapper.mapping.tolist())) == 10  # one-to-one


def test_lr_schedule_follows_the_paper():
    (x, y), _ = _digits(8)
    feats = x.flatten(1)
    _, fit = train_linear_probe((feats, y), (feats, y), 10, epochs=10, lr=0.01)
    lrs = [h["lr"] for h in fit.history]
    # MultiStepLR at 50% and 72% of the epochs, gamma 0.1
    assert lrs[:5] == [0.01] * 5
    assert lrs[5:7] == pytest.approx([0.001] * 2)
    assert lrs[7:] == pytest.approx([0.0001] * 3)


@pytest.mark.parametrize("arch", ["cifar_resnet_20", "resnet18"])
def test_fold_batchnorm_keeps_the_function_and_drops_every_bn(arch, sparse_source):
    if arch == "cifar_resnet_20":
        model, mask = sparse_source
    else:
        torch.manual_seed(0)
        model = create_backbone(arch, num_classes=10)
        with torch.no_grad():  # BN statistics away from the identity
            model.train()(torch.randn(8, 3, 64, 64))
        model, mask = freeze(model), None
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a copy
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(folded(x), model(x), atol=1e-5)
    # Evaluated in float64, where rounding (which ReLU gating amplifies in a float32 input
    # gradient, folded or not) stays far below the tolerance: the folded weights (float32)
    # give the same logits and the same gradient for the prompt.
    x = x.double().requires_grad_()
    out, ref = copy.deepcopy(folded).double()(x), copy.deepcopy(model).double()(x)
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(out.sum(), x)
    (ref_grad,) = torch.autograd.grad(ref.sum(), x)
    assert torch.allclose(grad, ref_grad, rtol=1e-5, atol=1e-6)
    if mask is not None:
        assert _pruned_weights_are_zero(folded, mask)


def test_fold_batchnorm_leaves_a_reused_conv_alone():
    class Reused(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
            self.bn1, self.bn2 = torch.nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn2(self.conv(self.bn1(self.conv(x))))

    model = Reused()
    model.bn1.running_mean.fill_(0.5)
    model.bn2.running_var.fill_(4.0)
    model = freeze(model)
    folded = fold_batchnorm(model)
    x = torch.rand(2, 3, 8, 8)
    assert isinstance(folded.bn1, torch.nn.BatchNorm2d)
    assert torch.allclose(folded(x), model(x), atol=1e-6)


def test_fold_batchnorm_leaves_an_untraceable_model_unfolded():
    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > 0 else x  # data-dependent

    folded = fold_batchnorm(Branchy())
    assert isinstance(folded.bn, torch.nn.BatchNorm2d)
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(folded(x), Branchy.forward(folded, x))
