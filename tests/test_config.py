"""ExperimentConfig: every bad value is named with the allowed ones, before any compute."""

import dataclasses

import pytest

from lib.study.config import ExperimentConfig


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("dataset", "cifar11", "unknown dataset 'cifar11'; choose one of: mnist"),
        ("arch", "resnet51", "unknown architecture 'resnet51'; choose one of:"),
        ("method", "finetune", "unknown method 'finetune'; choose one of: lp, vp"),
        (
            "mapping",
            "bayes",
            "unknown mapping 'bayes'; choose one of: ilm, flm, rlm, linear, blm, blmpp",
        ),
        ("network", "pruned", "unknown network 'pruned'; choose one of: dense, ticket"),
        ("epochs", -1, "epochs must be a number >= 1, got -1"),
        ("epochs", "ten", "epochs must be an int, got 'ten' (str)"),
        ("n_shot", 0, "n_shot must be a number >= 1 (or -1 for all), got 0"),
        ("target_size", 64, "target_size 64 must be in 1..32"),
        ("weight_bits", 9, "unknown weight_bits 9; choose one of: 2, 3"),
        ("lr", 0, "lr must be a positive number"),
        ("val_fraction", 1.5, "val_fraction must be a float in (0, 1)"),
    ],
)
def test_bad_values_are_named(field, value, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        ExperimentConfig(**{field: value})


def test_unknown_key_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) 'epoch'; choose from: .*epochs"):
        ExperimentConfig.from_dict({"epoch": 3})


def test_dense_cannot_have_a_sparsity_state():
    with pytest.raises(ValueError, match="network 'dense' has sparsity state 0, got 4"):
        ExperimentConfig(network="dense", sparsity=4)


def test_paper_spelling_of_networks_is_accepted():
    assert ExperimentConfig.from_dict({"network": "LT", "sparsity": 3}).network == "ticket"


def test_config_is_frozen_and_keyed_by_content():
    cfg = ExperimentConfig(dataset="digits", method="lp")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3  # type: ignore[misc]
    same = ExperimentConfig(dataset="digits", method="lp")
    other = dataclasses.replace(cfg, epochs=cfg.epochs + 1)
    assert cfg.run_key == same.run_key != other.run_key
    assert cfg.run_key.startswith("digits-dense-lp-full-s1-")
    # logging switches do not change what a run computes, so not its identity
    assert dataclasses.replace(cfg, tensorboard=True).run_key == cfg.run_key


def test_input_size_follows_the_method():
    assert ExperimentConfig(dataset="mnist", method="lp").input_size == 32  # source size
    assert ExperimentConfig(dataset="mnist", method="vp").input_size == 24  # mini VP size
    assert ExperimentConfig(dataset="mnist", method="vp", target_size=16).input_size == 16
