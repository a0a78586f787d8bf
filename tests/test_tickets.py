"""The shipped-ticket manifest: hashes, regime checks, verification errors that name the file."""

import json
import shutil
import subprocess
import sys

import pytest

from lib.study.source_regime import regime_checks, regime_lines
from lib.study.tickets import (
    MANIFEST,
    TicketError,
    build_manifest,
    compare,
    verify,
)

TICKETS_CAP_BYTES = 60_000_000  # issue 27: the repository's tickets in all


def _report(kind, state, acc):
    return {"kind": kind, "state": state, "test_accuracy": acc, "sparsity": 1 - 0.8**state}


def _release(tmp_path, tickets, seeds=(0, 1)):
    root = tmp_path / "release"
    for seed in seeds:
        folder = root / f"seed{seed}"
        shutil.copytree(tickets, folder)
        accs = {0: 0.98, 1: 0.985, 2: 0.975}
        for state, acc in accs.items():
            report = {**_report("dyn4", state, acc), "checkpoint": "c", "mask": "m"}
            (folder / f"cifar_resnet_20_8_dyn4_{state}_report.json").write_text(json.dumps(report))
        random = {**_report("random", 2, 0.9), "checkpoint": "c", "mask": "m"}
        (folder / "cifar_resnet_20_8_random_2_report.json").write_text(json.dumps(random))
        (folder / "source_config.json").write_text(json.dumps({"epochs": 6, "seed": seed}))
        (folder / "cifar_resnet_20_8_rewind.pth").write_bytes(b"not shipped")
    manifest = build_manifest(root, list(seeds), "test-v1")
    (root / MANIFEST).write_text(json.dumps(manifest))
    for seed in seeds:  # left out of the manifest, so out of the release (verify refuses it)
        (root / f"seed{seed}" / "cifar_resnet_20_8_rewind.pth").unlink()
    return root, manifest


def test_regime_checks():
    reports = [_report("dyn4", k, a) for k, a in enumerate([0.98, 0.98, 0.975, 0.97, 0.964])]
    reports.append(_report("random", 4, 0.90))
    checks = regime_checks(reports)
    assert checks["dense_ok"] and checks["random_below_ok"]
    assert checks["ticket_minus_random"] == pytest.approx(0.064)
    assert not checks["tickets_match_ok"]  # state 4 is 1.6 points below dense
    reports[4]["test_accuracy"] = 0.966
    assert regime_checks(reports)["tickets_match_ok"]
    reports[5]["test_accuracy"] = 0.92
    assert not regime_checks(reports)["random_below_ok"]
    reports[0]["test_accuracy"] = 0.96
    assert not regime_checks(reports)["dense_ok"]


def test_manifest_lists_every_shipped_file_and_verifies(tmp_path, tickets):
    root, manifest = _release(tmp_path, tickets)
    assert manifest["seeds"] == [0, 1] and manifest["recipe"] == {"epochs": 6}
    assert "seed0/cifar_resnet_20_8_dyn4_2_checkpoint.pth" in manifest["files"]
    assert not any(name.endswith("_rewind.pth") for name in manifest["files"])
    assert {t["source_seed"] for t in manifest["tickets"]} == {0, 1}
    assert manifest["regime_checks"]["0"]["dense_accuracy"] == 0.98
    assert verify(root)["version"] == "test-v1"


def test_verify_names_the_altered_or_missing_file(tmp_path, tickets):
    root, _ = _release(tmp_path, tickets)
    mask = root / "seed1" / "cifar_resnet_20_8_dyn4_1_mask.pth"
    data = bytearray(mask.read_bytes())
    data[-1] ^= 1
    mask.write_bytes(bytes(data))
    altered = "seed1/cifar_resnet_20_8_dyn4_1_mask.pth: sha256 differs"
    with pytest.raises(TicketError, match=altered):
        verify(root)
    mask.unlink()
    with pytest.raises(TicketError, match="dyn4_1_mask.pth: shipped ticket file missing"):
        verify(root)
    (root / MANIFEST).unlink()
    with pytest.raises(TicketError, match="no ticket manifest"):
        verify(root)


def test_recipes_must_agree_between_seeds(tmp_path, tickets):
    root, _ = _release(tmp_path, tickets)
    (root / "seed1" / "source_config.json").write_text(json.dumps({"epochs": 7, "seed": 1}))
    with pytest.raises(TicketError, match="recipe differs"):
        build_manifest(root, [0, 1], "test-v1")


def test_compare_reports_differences(tmp_path, tickets):
    _, manifest = _release(tmp_path, tickets)
    remade = json.loads(json.dumps(manifest))
    remade["tickets"][0]["test_accuracy"] += 0.01
    first = next(iter(remade["files"]))
    remade["files"][first]["sha256"] = "0" * 64
    lines = compare(manifest, remade)
    assert "+0.0100" in lines[1]
    assert lines[-1].startswith(f"{len(manifest['files']) - 1} of {len(manifest['files'])} files")


def test_compare_one_remade_seed(tmp_path, tickets):
    """`remake --seeds 0` is compared with the shipped seed0 files only."""
    root, manifest = _release(tmp_path, tickets)
    remade = build_manifest(root, [0], "test-v1")
    lines = compare(manifest, remade)
    seed0 = [rel for rel in manifest["files"] if rel.startswith("seed0/")]
    assert 0 < len(seed0) < len(manifest["files"])
    assert lines[-1].startswith(f"{len(seed0)} of {len(seed0)} files")
    assert all(line.split()[0] == "0" for line in lines[1:-1])


def test_regime_lines_say_which_check_fails(tmp_path, tickets):
    _, manifest = _release(tmp_path, tickets)
    lines, passed = regime_lines(manifest)
    assert len(lines) == len(manifest["regime_checks"]) and lines[0].startswith("seed 0: dense")
    failing = json.loads(json.dumps(manifest))
    failing["regime_checks"]["0"]["random_below_ok"] = False
    lines, passed = regime_lines(failing)
    assert not passed
    assert lines[0].endswith("FAILS)") and "FAILS" not in lines[0].rsplit(";", 1)[0]


def test_source_checks_table_the_seeds_a_study_reads(tmp_path, tickets):
    from lib.study.source_regime import source_checks

    _, manifest = _release(tmp_path, tickets)
    manifest["regime_checks"]["1"]["random_below_ok"] = False
    table = source_checks(manifest, [1.0, 0, 7])  # seed 7: not in the release, left out
    assert table["source_seed"].tolist() == [0, 1]
    assert table["passes"].tolist() == [True, False]
    assert table.loc[0, "dense_accuracy"] == 0.98


def test_ship_keeps_the_listed_states_and_the_random_controls(tmp_path, tickets):
    from lib.study.tickets import ship

    work, _ = _release(tmp_path, tickets)
    root = tmp_path / "lean"
    manifest = json.loads(ship(work, root, [0, 1], "test-v1", states=[0, 2]).read_text())
    names = {rel.split("/")[1] for rel in manifest["files"]}
    assert "cifar_resnet_20_8_dyn4_2_mask.pth" in names
    assert "cifar_resnet_20_8_random_2_checkpoint.pth" in names
    assert not any("_dyn4_1_" in name for name in names)  # trained, not shipped
    assert not (root / "seed0" / "cifar_resnet_20_8_dyn4_1_checkpoint.pth").exists()
    assert {(t["kind"], t["state"]) for t in manifest["tickets"]} == {
        ("dyn4", 0),
        ("dyn4", 2),
        ("random", 2),
    }
    # the source curve and the regime checks still see every trained state
    assert {p["state"] for p in manifest["source_curve"] if p["kind"] == "dyn4"} == {0, 1, 2}
    assert manifest["shipped_states"] == [0, 2]
    assert verify(root)["total_bytes"] == manifest["total_bytes"]
    with pytest.raises(TicketError, match="twice"):
        ship(work, work, [0], "test-v1")


def test_ship_adds_sources_to_a_release_a_few_at_a_time(tmp_path, tickets):
    from lib.study.tickets import ship

    work, full = _release(tmp_path, tickets)
    root = tmp_path / "lean"
    ship(work, root, [0], "test-v1", states=[0, 2])
    shutil.rmtree(work / "seed0")  # a machine that trained only the new source
    manifest = json.loads(ship(work, root, [1], "test-v1", states=[0, 2]).read_text())
    assert manifest["seeds"] == [0, 1] and set(manifest["regime_checks"]) == {"0", "1"}
    assert {t["source_seed"] for t in manifest["tickets"]} == {0, 1}
    assert verify(root)["files"] == manifest["files"]
    with pytest.raises(TicketError, match="another recipe"):
        ship(work, root, [1], "test-v2", states=[0, 2])


def test_every_shipped_release_verifies_and_holds_what_its_studies_read():
    """Each tickets/<release>/ matches its manifest, and every study that names it finds
    each source seed and ticket state it runs among the shipped files."""
    import yaml

    from lib.core.utils import resolve_path
    from lib.study.grid import expand_grid, load_params

    releases = {p.parent.name: p.parent for p in resolve_path("tickets").glob("*/manifest.json")}
    assert releases, "no shipped ticket release"
    manifests = {name: verify(root) for name, root in releases.items()}
    for params_file in sorted(resolve_path("params").glob("*.yaml")):
        if not (yaml.safe_load(params_file.read_text()) or {}).get("tickets"):
            continue
        params = load_params(params_file)
        configs = expand_grid(params)
        manifest = manifests.get(resolve_path(params["tickets"]).name)
        seeds = [c.source_seed for c in configs]
        if manifest is None or not set(seeds) <= set(manifest["seeds"]):
            # a registered tier whose source models still train: its sweep refuses it whole
            with pytest.raises(TicketError, match="no ticket manifest|train them first"):
                verify(params["tickets"], seeds=seeds)
            continue
        shipped = {(t["source_seed"], t["kind"], t["state"]) for t in manifest["tickets"]}
        for config in configs:
            if config.network in ("ticket", "random_pruned", "quantized"):
                kind = "random" if config.network == "random_pruned" else "dyn4"
                key = (config.source_seed, kind, int(config.sparsity))
                assert key in shipped, f"{params_file.name}: {key} not shipped"
            else:
                assert (config.source_seed, "dyn4", 0) in shipped, params_file.name


def test_shipped_tickets_stay_under_the_repository_cap():
    """Every shipped release together (its manifest and the files it lists, except the .pth
    files its packed archives rebuild, which git ignores) under 60 MB (issue 27); the
    materialized masks are bool, a quarter of float32's bytes."""
    import torch

    from lib.core.utils import resolve_path
    from lib.study.tickets import shipped_bytes

    total = 0
    for root in (p.parent for p in resolve_path("tickets").glob("*/manifest.json")):
        files = verify(root)["files"]  # rebuilds any missing .pth
        total += shipped_bytes(files) + (root / MANIFEST).stat().st_size
        rebuilt = [str(root / r) for r, e in files.items() if "packed" in e]
        ignored = subprocess.run(
            ["git", "check-ignore", "--no-index", *rebuilt], capture_output=True, text=True
        ).stdout.split()
        assert sorted(ignored) == sorted(rebuilt), "rebuilt .pth files must stay out of git"
        for rel in (r for r in files if r.endswith("_mask.pth")):
            dtypes = {v.dtype for v in torch.load(root / rel, weights_only=True).values()}
            assert dtypes == {torch.bool}, f"{root / rel}: mask stored as {dtypes}"
    assert total < TICKETS_CAP_BYTES, f"tickets/ ships {total / 1e6:.1f} MB (cap 60 MB)"


def test_every_packed_file_rebuilds_byte_identical():
    """Each .pth a shipped archive stands for rebuilds, in memory, to its manifest sha256."""
    from lib.core.utils import resolve_path
    from lib.models import packed

    checked = 0
    for root in (p.parent for p in resolve_path("tickets").glob("*/manifest.json")):
        files = json.loads((root / MANIFEST).read_text())["files"]
        for rel, entry in files.items():
            if "packed" in entry:
                name = rel.rsplit("/", 1)[1]
                assert packed.digest(root / entry["packed"], name) == entry["sha256"], rel
                checked += 1
    assert checked, "no shipped release is packed"


def test_packed_release_rebuilds_missing_files_and_refuses_tampering(tmp_path, tickets):
    from lib.study.checks import check_files
    from lib.study.config import ExperimentConfig
    from lib.study.tickets import ship

    work, _ = _release(tmp_path, tickets)
    root = tmp_path / "lean"
    manifest = json.loads(ship(work, root, [0, 1], "test-v1").read_text())
    ticket = root / "seed0" / "cifar_resnet_20_8_dyn4_2_checkpoint.pth"
    assert manifest["files"]["seed0/cifar_resnet_20_8_dyn4_2_checkpoint.pth"]["packed"]
    assert manifest["total_bytes"] < sum(e["bytes"] for e in manifest["files"].values())
    original = ticket.read_bytes()
    ticket.unlink()
    verify(root)
    assert ticket.read_bytes() == original
    # a study's pre-flight check rebuilds what it needs from the release too
    ticket.unlink()
    check_files(ExperimentConfig(pretrained_dir=str(root / "seed0"), network="ticket", sparsity=2))
    assert ticket.read_bytes() == original
    ticket.write_bytes(original[:-1] + b"x")
    with pytest.raises(TicketError, match=f"{ticket}: sha256 differs.*delete it"):
        verify(root)
    ticket.unlink()
    archive = root / "seed0" / "packed.npz"
    archive.write_bytes(archive.read_bytes()[:-10])
    with pytest.raises(TicketError, match=f"{archive}: packed tickets missing or altered"):
        verify(root)
    assert not ticket.exists()


def test_pack_refuses_weights_the_mask_prunes(tickets, tmp_path):
    import torch

    from lib.models import packed

    folder = tmp_path / "t"
    shutil.copytree(tickets, folder)
    name = "cifar_resnet_20_8_dyn4_2_checkpoint.pth"
    state = torch.load(folder / name, weights_only=True)
    mask = torch.load(folder / name.replace("checkpoint", "mask"), weights_only=True)
    key = next(iter(mask))
    state[key][~mask[key]] = 1.0
    torch.save(state, folder / name)
    with pytest.raises(packed.PackError, match=f"{key} is not zero where its mask prunes"):
        packed.pack(folder, [name])
    assert not (folder / packed.PACKED).exists()


def test_verify_refuses_what_the_manifest_does_not_cover(tmp_path, tickets):
    root, _ = _release(tmp_path, tickets)
    planted = root / "seed0" / "cifar_resnet_20_8_dyn4_5_checkpoint.pth"
    planted.write_bytes((root / "seed0" / "cifar_resnet_20_8_dyn4_2_checkpoint.pth").read_bytes())
    with pytest.raises(TicketError, match="does not list.*seed0/cifar_resnet_20_8_dyn4_5_check"):
        verify(root)
    planted.unlink()
    manifest = json.loads((root / MANIFEST).read_text())
    for files, message in (
        ({}, "`files` must be a non-empty mapping"),
        (list(manifest["files"]), "`files` must be a non-empty mapping"),
        ({**manifest["files"], "../../etc/hostname": {"sha256": "0"}}, "outside the release"),
        ({**manifest["files"], "/etc/hostname": {"sha256": "0"}}, "outside the release"),
    ):
        (root / MANIFEST).write_text(json.dumps({**manifest, "files": files}))
        with pytest.raises(TicketError, match=message):
            verify(root)


def test_verify_refuses_a_study_reading_seeds_not_shipped_yet(tmp_path, tickets):
    root, _ = _release(tmp_path, tickets)
    assert verify(root, seeds=[0, 1, 1])["seeds"] == [0, 1]
    with pytest.raises(
        TicketError, match=r"ships 2 source models; .* 4 it lacks \(5, 6, 7, ... 9\)"
    ):
        verify(root, seeds=[0, 9, 5, 6, 7])


def test_a_recipe_lacking_its_sections_is_one_line(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("version: v\nsource_seeds: [0]\n")
    command = [sys.executable, "-m", "lib.tickets", "make", str(tmp_path / "out")]
    done = subprocess.run([*command, "--recipe", str(recipe)], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "`pretrain` must be a dict" in done.stderr
    recipe.write_text("version: v\nversion: w\nsource_seeds: [0]\npretrain: {}\n")
    done = subprocess.run([*command, "--recipe", str(recipe)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "duplicate key 'version' at lines 1 and 2" in done.stderr
