"""Figures of the source model and its tickets (the pretrain notebook, and the report's
section on where the source accuracy falls)."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def source_samples(dataset: Any, classes: list[str], count: int = 16) -> plt.Figure:
    """`count` training images of the source corpus, evenly spaced, titled by class."""
    fig, axes = plt.subplots(2, count // 2, figsize=(12, 3.4))
    step = max(1, len(dataset) // count)
    for ax, i in zip(axes.flat, range(0, len(dataset), step), strict=False):
        image, label = dataset[i]
        ax.imshow(image.permute(1, 2, 0).numpy())
        ax.set_title(classes[label])
        ax.axis("off")
    return fig


def source_training_curves(curves: pd.DataFrame) -> plt.Figure:
    """Training loss and accuracy per epoch of every IMP level (lib.models.prune.history_frame)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for ax, column in zip(axes, ("loss", "accuracy"), strict=True):
        sns.lineplot(
            curves,
            x="epoch",
            y=column,
            hue="level",
            style="kind",
            marker="o",
            ax=ax,
            legend=ax is axes[-1],
        )
    sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1, 1), ncol=2)
    fig.tight_layout()
    return fig


def source_accuracy_vs_sparsity(table: pd.DataFrame, title: str) -> plt.Figure:
    """Test accuracy of the tickets and the random controls over sparsity
    (lib.models.prune.imp_table), the dense model's as a dotted line."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    sns.lineplot(
        table,
        x="sparsity %",
        y="test accuracy %",
        hue="kind",
        style="kind",
        markers=True,
        dashes=False,
        ax=ax,
    )
    dense = table.query("kind == 'ticket' and state == 0")["test accuracy %"].item()
    ax.axhline(dense, color="gray", lw=0.8, ls=":", label="dense")
    ax.set_title(title)
    ax.legend()
    return fig


def drop_by_state(table: pd.DataFrame, sparsity: dict[int, float] | None = None) -> plt.Figure:
    """Issue 27: per dataset, the transfer accuracy drop (dense - ticket) at each IMP state,
    one line per method and n-shot with 95% intervals, and the source task's own drop
    (dashed, black) from the manifest: where the source accuracy falls, what transfer does."""
    datasets = sorted(table["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.8), squeeze=False)
    for ax, name in zip(axes[0], datasets, strict=True):
        d = table[table["dataset"] == name]
        for (method, shot), g in d.groupby(["method", "n_shot"]):
            g = g.sort_values("state")
            label = f"{method}, {'full' if shot == -1 else f'{shot}-shot'}"
            ax.errorbar(
                g["state"],
                g["effect"],
                yerr=[g["effect"] - g["low"], g["high"] - g["effect"]],
                marker="o" if method == "LP" else "s",
                capsize=2,
                label=label,
                ls="-" if method == "LP" else "--",
            )
        if "source_drop" in d and d["source_drop"].notna().any():
            s = d.drop_duplicates("state").sort_values("state")
            ax.plot(s["state"], s["source_drop"], "k:", marker="x", label="source task")
        ax.axhline(0, color="0.5", lw=0.8)
        states = sorted(d["state"].unique())
        ax.set_xticks(
            states,
            [
                f"{k}\n{100 * sparsity[k]:.0f}%" if sparsity and k in sparsity else str(k)
                for k in states
            ],
        )
        ax.set(xlabel="IMP state (sparsity)", ylabel="accuracy drop (dense - ticket)", title=name)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1, 1), fontsize="small")
    fig.suptitle("accuracy lost to sparsity, on the source task and after transfer")
    fig.tight_layout()
    return fig
