"""Output label mapping from source classes to target classes: ILM, FLM, RLM, BLM, BLM+ and a
linear map.

ILM/FLM follow ILM-VP (Chen et al., CVPR 2023): count how often each target class lands on
each source class (argmax of the prompted source model), then assign sources greedily.
BLM/BLM+ follow Cai et al., "Bayesian-guided Label Mapping for Visual Reprogramming"
(NeurIPS 2024): a many-to-many matrix omega[S, T] from the joint distribution of predicted
source labels and true target labels; target logits = source logits @ omega.

    from lib.adapt.labelmap import LabelMapper
    mapper = LabelMapper("blm", num_source=45, num_target=10)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

MAPPINGS: tuple[str, ...] = ("ilm", "flm", "rlm", "linear", "blm", "blmpp")
# The reference code's hyperparameters (tmlr-group/BayesianLM, cfg.py `config_vm`): Laplace
# smoothing lambda = 1 for both; BLM+ keeps the top K = int(topk_ratio * T) source
# probabilities per sample, topk_ratio = 0.15 (no temperature: a plain softmax).
BLM_LAPLACE = 1.0
BLMPP_TOPK_RATIO = 0.15


def frequency_counts(source_logits: Tensor, target_labels: Tensor, num_target: int) -> Tensor:
    """counts[s, t] = number of samples of target class t whose argmax source class is s."""
    if source_logits.ndim != 2 or target_labels.shape != source_logits.shape[:1]:
        raise ValueError(
            f"expected source_logits [N, S] and target_labels [N]; got "
            f"{tuple(source_logits.shape)} and {tuple(target_labels.shape)}"
        )
    labels = target_labels.detach().long().cpu()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_target):
        raise ValueError(
            f"target labels must be in 0..{num_target - 1}; "
            f"got values in {labels.min().item()}..{labels.max().item()}"
        )
    num_source = source_logits.shape[1]
    top = source_logits.detach().argmax(dim=1).cpu()
    # Columns come from num_target, not from the labels present (ILM-VP used len(y.unique()),
    # which silently drops the columns of classes absent from a few-shot sample).
    flat = torch.bincount(top * num_target + labels, minlength=num_source * num_target)
    return flat.view(num_source, num_target)


def greedy_mapping(counts: Tensor, per_target: int = 1) -> Tensor:
    """ILM-VP's greedy one-to-one assignment of source classes to target classes.

    Repeatedly take the global maximum (s, t) of the remaining counts (ties: first in
    row-major order), give source s to target t and drop row s; drop column t once it holds
    `per_target` sources. When only zeros remain (classes never predicted) the same rule
    picks the lowest free source for the lowest open target, as ILM-VP does. Returns
    LongTensor[T * per_target]: sources of target t at [t*per_target:(t+1)*per_target], in
    the order they were assigned (ILM-VP lists them by source index; apply_mapping averages).
    """
    if counts.ndim != 2:
        raise ValueError(f"counts must be [S, T]; got shape {tuple(counts.shape)}")
    if per_target < 1:
        raise ValueError(f"per_target must be >= 1; got {per_target}")
    num_source, num_target = counts.shape
    if num_source < num_target * per_target:
        raise ValueError(
            f"need num_source >= num_target * per_target; got num_source={num_source}, "
            f"num_target={num_target}, per_target={per_target}"
        )
    # -inf marks used rows/columns (ILM-VP used -1, equivalent for counts >= 0).
    remaining = counts.detach().to("cpu", torch.float64).clone()
    assigned: list[list[int]] = [[] for _ in range(num_target)]
    for _ in range(num_target * per_target):
        # torch.argmax returns the first maximal index: row-major tie-breaking.
        s, t = divmod(int(remaining.argmax()), num_target)
        assigned[t].append(s)
        remaining[s, :] = -torch.inf
        if len(assigned[t]) == per_target:
            remaining[:, t] = -torch.inf
    return torch.tensor([s for sources in assigned for s in sources], dtype=torch.long)


def apply_mapping(source_logits: Tensor, mapping: Tensor, per_target: int = 1) -> Tensor:
    """Target logits [N, T]: each target's mean source logit over its mapped sources.

    `mapping` is the flat LongTensor[T * per_target] from greedy_mapping, or [T, per_target].
    """
    if mapping.ndim == 1:
        if per_target < 1 or mapping.numel() % per_target:
            raise ValueError(
                f"mapping of length {mapping.numel()} does not split into groups of "
                f"per_target={per_target}"
            )
        mapping = mapping.view(-1, per_target)
    elif mapping.ndim != 2:
        raise ValueError(f"mapping must be [T * k] or [T, k]; got shape {tuple(mapping.shape)}")
    mapping = mapping.to(source_logits.device)
    return source_logits[:, mapping].mean(dim=2)


def blm_joint(
    source_logits: Tensor, target_labels: Tensor, num_target: int, strategy: str = "blm"
) -> Tensor:
    """The joint-distribution counts [S, T] BLM/BLM+ start from.

    blm: counts[s, t] = samples of target t whose argmax source is s (frequency_counts).
    blmpp: counts[s, t] = sum over samples of target t of their softmax probability of s,
    only the top K = blmpp_topk(T) probabilities of each sample kept (the rest zero): the
    "top-K mechanism" and "probability summation" of blmp_reweight_matrix in
    tmlr-group/BayesianLM mapping.py.
    """
    if strategy == "blm":
        return frequency_counts(source_logits, target_labels, num_target).double()
    if strategy != "blmpp":
        raise ValueError(f"unknown BLM strategy {strategy!r}; choose one of: blm, blmpp")
    frequency_counts(source_logits[:, :1], target_labels, num_target)  # validates shapes/labels
    probs = source_logits.detach().double().cpu().softmax(dim=1)
    k = min(blmpp_topk(num_target), probs.shape[1])
    values, index = probs.topk(k, dim=1)
    kept = torch.zeros_like(probs).scatter_(1, index, values)
    counts = torch.zeros(probs.shape[1], num_target, dtype=torch.float64)
    counts.index_add_(1, target_labels.detach().long().cpu(), kept.t())
    return counts


def blmpp_topk(num_target: int) -> int:
    """BLM+'s K: int(BLMPP_TOPK_RATIO * T) as train_vm.py computes it, at least 1."""
    return max(1, int(num_target * BLMPP_TOPK_RATIO))


def blm_matrix(counts: Tensor, laplace: float = BLM_LAPLACE) -> Tensor:
    """BLM's mapping matrix omega [S, T] from joint counts [S, T]; every column sums to 1.

    As blm_reweight_matrix / update_blm_reweight_matrix in tmlr-group/BayesianLM mapping.py:
    divide each row by its total plus the Laplace term (P(target | source), smoothed so a
    source predicted once does not get probability 1), then each column by its total
    (normalization over the source classes). A target class with no counts at all (absent
    from a tiny sample) gets a uniform column instead of the reference code's 0/0.
    """
    if counts.ndim != 2:
        raise ValueError(f"counts must be [S, T]; got shape {tuple(counts.shape)}")
    counts = counts.detach().to("cpu", torch.float64)
    conditional = counts / (counts.sum(dim=1, keepdim=True) + laplace)
    totals = conditional.sum(dim=0, keepdim=True)
    uniform = torch.full_like(conditional, 1.0 / counts.shape[0])
    return torch.where(totals > 0, conditional / totals.clamp_min(1e-300), uniform)


class LabelMapper(nn.Module):
    """Source logits -> target logits by one of MAPPINGS.

    rlm: random one-to-one map fixed at construction (seeded); flm: frequency map computed
    once before training; ilm: frequency map recomputed when epoch % interval == 0;
    linear: a learned nn.Linear(S, T) on the source logits (AutoVP's fully connected map);
    blm / blmpp: the Bayesian-guided matrix `weights` [S, T] (blm_matrix), recomputed like ilm
    with the current prompt over the training set at the start of every `interval`-th epoch
    (train_vm.py of tmlr-group/BayesianLM), applied as source_logits @ weights (their
    label_mapping_calculation). For blm/blmpp `mapping` holds each target's `per_target`
    highest-weight sources (for records and mapping quality); the prediction uses all of them.
    The mapping (and weights) are buffers, so they are saved in the state_dict.
    """

    def __init__(
        self,
        strategy: str,
        num_source: int,
        num_target: int,
        per_target: int = 1,
        interval: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if strategy not in MAPPINGS:
            raise ValueError(f"unknown mapping '{strategy}'; choose one of: {', '.join(MAPPINGS)}")
        if per_target < 1 or interval < 1:
            raise ValueError(
                f"per_target and interval must be >= 1; got per_target={per_target}, "
                f"interval={interval}"
            )
        if strategy != "linear" and num_source < num_target * per_target:
            raise ValueError(
                f"need num_source >= num_target * per_target; got num_source={num_source}, "
                f"num_target={num_target}, per_target={per_target}"
            )
        self.strategy, self.num_source, self.num_target = strategy, num_source, num_target
        self.per_target, self.interval, self.seed = per_target, interval, seed
        self.linear = nn.Linear(num_source, num_target) if strategy == "linear" else None
        if strategy == "linear":
            mapping = None
        elif strategy == "rlm":
            generator = torch.Generator().manual_seed(seed)
            mapping = torch.randperm(num_source, generator=generator)[: num_target * per_target]
        else:
            # -1 = not computed yet; a placeholder of the final shape keeps state_dicts loadable.
            mapping = torch.full((num_target * per_target,), -1, dtype=torch.long)
        self.register_buffer("mapping", mapping)
        many = strategy in ("blm", "blmpp")
        self.register_buffer("weights", torch.zeros(num_source, num_target) if many else None)

    def needs_update(self, epoch: int) -> bool:
        """Whether the mapping should be recomputed at the start of `epoch` (0-based)."""
        if self.strategy in ("ilm", "blm", "blmpp"):
            return epoch % self.interval == 0
        return self.strategy == "flm" and epoch == 0

    @torch.no_grad()
    def update(self, source_logits: Tensor, labels: Tensor) -> None:
        """Recompute the mapping from the source logits of the training set (ilm, flm, blm,
        blmpp)."""
        if self.strategy not in ("ilm", "flm", "blm", "blmpp"):
            raise RuntimeError(
                f"update() is for ilm/flm/blm/blmpp; '{self.strategy}' has no frequency map"
            )
        if self.weights is not None:
            counts = blm_joint(source_logits, labels, self.num_target, self.strategy)
            weights = blm_matrix(counts, BLM_LAPLACE)
            self.weights.copy_(weights.to(self.weights))
            top = weights.topk(self.per_target, dim=0).indices.t().reshape(-1)
            self.mapping.copy_(top)
            return
        counts = frequency_counts(source_logits, labels, self.num_target)
        self.mapping.copy_(greedy_mapping(counts, self.per_target))

    def forward(self, source_logits: Tensor) -> Tensor:
        if self.linear is not None:
            return self.linear(source_logits)
        if bool((self.mapping < 0).any()):
            raise RuntimeError(f"'{self.strategy}' mapping not computed yet: call update() first")
        if self.weights is not None:
            return source_logits @ self.weights.to(source_logits.dtype)
        return apply_mapping(source_logits, self.mapping, self.per_target)

    def extra_repr(self) -> str:
        return (
            f"strategy={self.strategy}, num_source={self.num_source}, "
            f"num_target={self.num_target}, per_target={self.per_target}, interval={self.interval}"
        )


def mapping_hyperparameters(strategy: str, num_target: int) -> dict[str, float | int]:
    """What a record says about the mapping's fixed hyperparameters (BLM: lambda; BLM+: K)."""
    if strategy == "blm":
        return {"laplace": BLM_LAPLACE}
    if strategy == "blmpp":
        return {
            "laplace": BLM_LAPLACE,
            "topk_ratio": BLMPP_TOPK_RATIO,
            "topk": blmpp_topk(num_target),
        }
    return {}
