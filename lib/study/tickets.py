"""Shipped lottery tickets: a versioned folder of IMP runs, one per source seed, and its manifest.

    python -m lib.tickets verify tickets/glyphs-v2     # every file against the manifest
    python -m lib.tickets make tickets/glyphs-v2       # train what is missing under
                                                       # outputs/tickets/ (resumable), then
                                                       # ship the lean release + manifest
    python -m lib.tickets remake tickets/glyphs-v2     # `make tickets`: the same recipe from
                                                       # nothing under outputs/, compared
    python -m lib.tickets remake tickets/glyphs-v2 --seeds 0   # one source seed only
    python -m lib.tickets pack tickets/glyphs-v2       # re-encode the .pth files, exactly

Each `seed{s}/` folder is what notebooks/pretrain_source.ipynb writes for source seed s: the
paper's ticket files `{arch}_dyn4_{k}_checkpoint.pth` / `_mask.pth` with a `_report.json`
beside each (state, kind, test accuracy), random-pruning controls `{arch}_random_{k}_*`, and
the resolved recipe. Training writes every IMP state (each needs the one before); the
release ships only the recipe's `ship_states` (those the studies read) and the random
controls. The ticket .pth files ship packed (`seed{s}/packed.npz`, lib.models.packed: 0.6 MB
for eight states instead of 3.2 MB); verify rebuilds, byte-identical, any that are missing.
`manifest.json` holds the sha256 of every file (the .pth too), each ticket's source accuracy
and sparsity, the source accuracy of every trained state (`source_curve`), the recipe,
package versions, CPU and git revision, and the
regime checks of the mini study (a converged dense source, tickets that match it, a random
control clearly below).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from lib.core.cli import HelpFormatter, run_main
from lib.core.utils import atomic_write_json, outputs_dir, resolve_path
from lib.study.grid import load_yaml
from lib.study.source_regime import regime_checks, regime_lines

MANIFEST = "manifest.json"
NOT_SHIPPED = ("pretrain.ipynb",)  # with the rewind point: made and used by `make` only


class TicketError(ValueError):
    """A shipped ticket is missing or altered, or a folder is not a ticket release."""


def seed_dir(root: str | Path, seed: int) -> Path:
    return resolve_path(root) / f"seed{seed}"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _not_shipped(path: Path) -> bool:
    return path.name in NOT_SHIPPED or path.name.endswith("_rewind.pth")


def _state_of(path: Path) -> int | None:
    """k of a ticket file `{arch}_dyn4_{k}_*` (None for any other file)."""
    parts = path.name.split("_dyn4_")
    if len(parts) != 2:
        return None
    head = parts[1].split("_")[0].split(".")[0]
    return int(head) if head.isdigit() else None


def _shipped(path: Path, states: Sequence[int] | None) -> bool:
    if _not_shipped(path):
        return False
    state = _state_of(path)
    return states is None or state is None or state in states


def _reports(folder: Path) -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in sorted(folder.glob("*_report.json"))]
    return sorted(found, key=lambda r: (r["kind"] != "dyn4", r["state"]))


def build_manifest(
    root: str | Path, seeds: Sequence[int], version: str, states: Sequence[int] | None = None
) -> dict[str, Any]:
    """The manifest of `root` as it is now: hashes every file shipped (ticket states in
    `states`, default all, and the random controls); regime checks and `source_curve` from
    every trained state present."""
    from lib.study.results import provenance

    root = resolve_path(root)
    files: dict[str, dict[str, Any]] = {}
    tickets, curve, checks, recipe = [], [], {}, None
    for seed in seeds:
        folder = seed_dir(root, seed)
        config = json.loads((folder / "source_config.json").read_text())
        this = {k: v for k, v in config.items() if k not in ("seed", "out_dir")}
        if recipe is not None and this != recipe:
            raise TicketError(
                f"{folder}: recipe differs from the other seeds' ({this} vs {recipe})"
            )
        recipe = this
        reports = _reports(folder)
        for r in reports:
            point = {k: r[k] for k in ("kind", "state", "test_accuracy", "sparsity")}
            curve.append({"source_seed": seed, **point})
            if r["kind"] == "dyn4" and states is not None and r["state"] not in states:
                continue
            tickets.append(
                {
                    "source_seed": seed,
                    "kind": r["kind"],
                    "state": r["state"],
                    "test_accuracy": r["test_accuracy"],
                    "sparsity": r["sparsity"],
                    "checkpoint": f"seed{seed}/{r['checkpoint']}",
                    "mask": f"seed{seed}/{r['mask']}",
                }
            )
        checks[str(seed)] = regime_checks(reports)
        for path in sorted(folder.iterdir()):
            if path.is_file() and _shipped(path, states):
                rel = path.relative_to(root).as_posix()
                files[rel] = {"sha256": sha256(path), "bytes": path.stat().st_size}
    return {
        "version": version,
        "seeds": list(seeds),
        "recipe": recipe,
        "regime_checks": checks,
        "shipped_states": sorted(states) if states is not None else None,
        "tickets": tickets,
        "source_curve": curve,
        "files": files,
        "total_bytes": sum(f["bytes"] for f in files.values()),
        "provenance": provenance(),
    }


def load_manifest(root: str | Path) -> dict[str, Any]:
    path = resolve_path(root) / MANIFEST
    if not path.is_file():
        raise TicketError(
            f"{path}: no ticket manifest; remake the tickets with `make tickets` "
            "(or `python -m lib.tickets make ROOT`)"
        )
    try:
        manifest = json.loads(path.read_text())
        manifest["files"], manifest["seeds"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise TicketError(f"{path}: not a ticket manifest ({error})") from None
    return manifest


def verify(root: str | Path, seeds: Sequence[int] = ()) -> dict[str, Any]:
    """Check the release against its manifest: a non-empty `files` mapping whose entries stay
    inside the release, every listed file present with its sha256, and no file in the release
    that the manifest does not list (a planted file would be loaded unverified); and that it
    ships every source seed in `seeds`. Errors name the file or the seeds."""
    root = resolve_path(root)
    manifest = load_manifest(root)
    _require_seeds(manifest, root, seeds)
    files = manifest["files"]
    if not isinstance(files, dict) or not files:
        raise TicketError(
            f"{root / MANIFEST}: `files` must be a non-empty mapping of file -> sha256"
        )
    inside = root.resolve()
    for rel, entry in files.items():
        path = root / rel
        if not path.resolve().is_relative_to(inside) or Path(rel).is_absolute():
            raise TicketError(f"{root / MANIFEST}: entry {rel!r} lies outside the release {root}")
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise TicketError(f"{root / MANIFEST}: entry {rel!r} has no sha256")
    listed = {(root / rel).resolve() for rel in files} | {(root / MANIFEST).resolve()}
    planted = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and p.resolve() not in listed
    )
    if planted:
        raise TicketError(
            f"{root}: files the manifest does not list (remove them or remake the release): "
            + ", ".join(planted[:5])
            + (f" and {len(planted) - 5} more" if len(planted) > 5 else "")
        )
    _materialize(root, files)
    for rel, entry in files.items():
        path = root / rel
        if not path.is_file():
            raise TicketError(f"{path}: shipped ticket file missing (listed in {MANIFEST})")
        if sha256(path) != entry["sha256"]:
            fix = (
                f"delete it: verify rebuilds it from {entry['packed']}"
                if "packed" in entry
                else f"restore it with `git checkout -- {path}` or remake with `make tickets`"
            )
            raise TicketError(
                f"{path}: sha256 differs from {root / MANIFEST} (the file was altered); {fix}"
            )
    return manifest


def _require_seeds(manifest: dict[str, Any], root: Path, seeds: Sequence[int]) -> None:
    """Refuse a study that reads source seeds the release does not ship yet (a tier whose
    sources are still training is never looked at in part)."""
    absent = sorted(set(seeds) - set(manifest["seeds"]))
    if absent:
        shown = ", ".join(map(str, absent[:3])) + (f", ... {absent[-1]}" if len(absent) > 3 else "")
        raise TicketError(
            f"{root} ships {len(manifest['seeds'])} source models; the study also reads "
            f"{len(absent)} it lacks ({shown}): train them first (python -m lib.tickets make)"
        )


def _materialize(root: Path, files: dict[str, dict[str, Any]]) -> None:
    """Write the missing files that a verified packed archive of the release rebuilds."""
    from lib.models import packed

    wanted: dict[str, list[str]] = {}
    for rel, entry in files.items():
        if "packed" in entry and not (root / rel).is_file():
            wanted.setdefault(entry["packed"], []).append(Path(rel).name)
    for archive, names in wanted.items():
        entry = files.get(archive)
        path = root / archive
        if entry is None or not path.is_file() or sha256(path) != entry["sha256"]:
            raise TicketError(f"{path}: packed tickets missing or altered (sha256 in {MANIFEST})")
        try:
            packed.unpack(path, names)
        except packed.PackError as error:
            raise TicketError(str(error)) from None


def shipped_bytes(files: dict[str, dict[str, Any]]) -> int:
    """Bytes the release ships: every listed file except those a packed archive rebuilds."""
    return sum(e["bytes"] for e in files.values() if "packed" not in e)


def pack_release(root: str | Path) -> dict[str, Any]:
    """Re-encode a release: per source seed not yet packed, its ticket .pth files into
    `seed{s}/packed.npz` (lib.models.packed), which must rebuild each byte for byte (checked
    against the manifest's sha256). The manifest keeps every .pth with its sha256 and names
    the archive that rebuilds it; the .pth files stay on disk, ignored by git."""
    from lib.models import packed

    root = resolve_path(root)
    manifest = verify(root)
    files = manifest["files"]
    for seed in manifest["seeds"]:
        prefix = f"seed{seed}/"
        names = sorted(r[len(prefix) :] for r in files if r.startswith(prefix))
        todo = [n for n in names if n.endswith("_checkpoint.pth")]
        if all("packed" in files[prefix + n] for n in todo):
            continue
        try:
            archive = packed.pack(seed_dir(root, seed), todo)
            for name in packed.contents(archive):
                if packed.digest(archive, name) != files[prefix + name]["sha256"]:
                    raise TicketError(f"{archive}: does not rebuild {name} exactly")
                files[prefix + name]["packed"] = prefix + packed.PACKED
        except packed.PackError as error:
            raise TicketError(str(error)) from None
        files[prefix + packed.PACKED] = {"sha256": sha256(archive), "bytes": archive.stat().st_size}
    manifest["files"] = dict(sorted(files.items()))
    manifest["total_bytes"] = shipped_bytes(manifest["files"])
    atomic_write_json(root / MANIFEST, manifest)
    return verify(root)


def pretrain_parameters(recipe: dict[str, Any], seed: int, out_dir: Path) -> dict[str, Any]:
    """Parameters of notebooks/pretrain_source.ipynb for one source seed."""
    params = {**recipe, "seed": seed, "out_dir": str(out_dir)}
    params["random_states"] = list(params.get("random_states", ()))
    return params


def train(work: str | Path, recipe: dict[str, Any], seeds: Sequence[int], workers: int = 1) -> Path:
    """Run the pretrain notebook for every seed into `work/seed{s}`, every IMP state
    (finished states are kept, so a killed run resumes), `workers` seeds at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from lib.study.executions import execute_notebook

    work = resolve_path(work)
    if workers > 1:  # one thread per kernel: the seeds share the cores instead of fighting
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))

    def one(seed: int) -> None:
        folder = seed_dir(work, seed)
        print(f"[tickets] source seed {seed} -> {folder}", flush=True)
        start = time.perf_counter()
        execute_notebook(
            "pretrain_source.ipynb",
            folder / "pretrain.ipynb",
            pretrain_parameters(recipe, seed, folder),
        )
        print(f"[tickets] source seed {seed} done in {time.perf_counter() - start:.0f} s")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, seeds))
    return work


def ship(
    work: str | Path,
    root: str | Path,
    seeds: Sequence[int],
    version: str,
    states: Sequence[int] | None = None,
) -> Path:
    """Copy the release out of a training folder: per seed the ticket files of `states`
    (default every state), the random controls and the recipe, then the manifest (regime
    checks and source curve from every trained state). Seeds the release already ships and
    `seeds` leaves out are kept (verified first, their training folders need not exist), so
    sources can be added a few at a time, on another machine too;
    an interrupted ship is simply run again."""
    import shutil

    work, root = resolve_path(work), resolve_path(root)
    if work.resolve() == root.resolve():
        raise TicketError(f"ship copies from a training folder into another; got {root} twice")
    manifest = build_manifest(work, seeds, version, states)
    new_files = list(manifest["files"])  # kept seeds' files are in root, maybe not in work
    if (root / MANIFEST).is_file():
        old = verify(root)
        if old["version"] != version or old["recipe"] != manifest["recipe"]:
            raise TicketError(f"{root} holds release {old['version']} of another recipe")
        kept = [s for s in old["seeds"] if s not in seeds]
        manifest = _merged(old, manifest, kept)
    for rel in new_files:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(work / rel, target)
    atomic_write_json(root / MANIFEST, manifest)
    pack_release(root)
    return root / MANIFEST


def _merged(old: dict[str, Any], new: dict[str, Any], kept: Sequence[int]) -> dict[str, Any]:
    """`new` with the entries of `old`'s seeds `kept` added back, seeds in order."""
    if not kept:
        return new
    out = dict(new)
    out["seeds"] = sorted({*kept, *new["seeds"]})
    mine = {f"seed{s}" for s in kept}
    for key in ("tickets", "source_curve"):
        out[key] = sorted(
            [t for t in old.get(key, []) if t["source_seed"] in kept] + new[key],
            key=lambda t: (t["source_seed"], t["kind"] != "dyn4", t["state"]),
        )
    out["regime_checks"] = dict(
        sorted(
            (
                {k: v for k, v in old["regime_checks"].items() if int(k) in kept}
                | new["regime_checks"]
            ).items(),
            key=lambda kv: int(kv[0]),
        )
    )
    files = {r: e for r, e in old["files"].items() if r.split("/")[0] in mine}
    out["files"] = dict(sorted((files | new["files"]).items()))
    out["total_bytes"] = shipped_bytes(out["files"])
    return out


def compare(manifest: dict[str, Any], remade: dict[str, Any]) -> list[str]:
    """Lines comparing remade tickets with the shipped manifest (source accuracy per ticket)."""
    shipped = {(t["source_seed"], t["kind"], t["state"]): t for t in manifest["tickets"]}
    lines = [f"{'seed':>4} {'kind':>6} {'state':>5} {'shipped':>8} {'remade':>8} {'diff':>7}"]
    for t in remade["tickets"]:
        old = shipped.get((t["source_seed"], t["kind"], t["state"]))
        if old is None:
            continue
        a, b = old["test_accuracy"], t["test_accuracy"]
        lines.append(
            f"{t['source_seed']:>4} {t['kind']:>6} {t['state']:>5} {a:8.4f} {b:8.4f} {b - a:+7.4f}"
        )
    folders = {rel.split("/")[0] for rel in remade["files"]}  # the seeds remade
    shipped_files = {  # the archives are re-encodings: the files they rebuild are compared
        r: e
        for r, e in manifest["files"].items()
        if r.split("/")[0] in folders and not r.endswith(".npz")
    }
    same = sum(
        remade["files"].get(rel, {}).get("sha256") == entry["sha256"]
        for rel, entry in shipped_files.items()
    )
    lines.append(f"{same} of {len(shipped_files)} files bit-identical to the shipped ones")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lib.tickets",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("command", choices=("verify", "make", "remake", "pack"))
    parser.add_argument("root", help="ticket release folder, e.g. tickets/glyphs-v2")
    parser.add_argument(
        "--recipe", default="params/tickets.yaml", help="make: the recipe (default: %(default)s)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="make/remake: seeds trained at once (default 1)"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="SEED",
        help="make/remake: only these source seeds (default: the recipe's source_seeds)",
    )
    parser.add_argument(
        "--work",
        "--out",
        default="",
        help="make/remake: the training folder, every IMP state "
        "(default: outputs/tickets/<release name>)",
    )
    args = parser.parse_args(argv)
    root = resolve_path(args.root)
    if args.command == "verify":
        manifest = verify(root)
        print(f"[tickets] {root}: {len(manifest['files'])} files match {MANIFEST}")
        return 0
    if args.command == "pack":
        manifest = pack_release(root)
        print(f"[tickets] {root}: packed, {manifest['total_bytes'] / 1e6:.1f} MB shipped")
        return 0
    try:
        spec = load_yaml(resolve_path(args.recipe))
    except ValueError as error:
        raise TicketError(str(error)) from None
    wanted = {"pretrain": dict, "source_seeds": list, "version": str}
    for key, kind in wanted.items():
        if not isinstance(spec, dict) or not isinstance(spec.get(key), kind):
            holds = ", ".join(wanted)
            raise TicketError(
                f"{args.recipe}: `{key}` must be a {kind.__name__} (a recipe holds {holds})"
            )
    recipe, seeds, version = spec["pretrain"], spec["source_seeds"], spec["version"]
    if args.seeds:
        unknown = sorted(set(args.seeds) - set(seeds))
        if unknown:
            parser.error(f"--seeds {unknown}: not in {args.recipe}'s source_seeds {seeds}")
        seeds = args.seeds
    states = spec.get("ship_states")
    out = resolve_path(args.work) if args.work else outputs_dir() / "tickets" / root.name
    if out.resolve() == root.resolve():
        raise TicketError(f"training writes elsewhere than the shipped folder {root}")
    # From nothing on a fresh machine; a killed run resumes from its finished states.
    train(out, recipe, seeds, args.workers)
    if args.command == "make":
        print(f"[tickets] manifest: {ship(out, root, seeds, version, states)}")
        return 0
    remade = build_manifest(out, seeds, version, states)
    atomic_write_json(out / MANIFEST, remade)
    print("\n".join(compare(load_manifest(root), remade)))
    lines, passed = regime_lines(remade)
    print("[tickets] regime checks of the remade tickets:", *lines, sep="\n  ")
    return 0 if passed else 1


def cli() -> NoReturn:
    """`python -m lib.tickets`: main() as a command."""
    run_main(main, "python -m lib.tickets", (TicketError, FileNotFoundError))


if __name__ == "__main__":
    cli()
