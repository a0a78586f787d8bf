"""environment.yml (conda) and pyproject.toml (pip) must list the same packages."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge spells some packages differently


def _name(spec: str) -> str:
    return re.split(r"[=<>!\[ ]", spec.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_side = {_name(d) for d in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_side = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            conda_side |= {_name(d) for d in dep["pip"] if not d.startswith("-e")}
        elif _name(dep) not in ("python", "pip"):
            conda_side.add(CONDA_NAMES.get(_name(dep), _name(dep)))
    assert pip_side - conda_side == set(), "missing from environment.yml"
    assert conda_side - pip_side == set(), "missing from pyproject.toml"


def test_pinned_versions_agree():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = (ROOT / "environment.yml").read_text()
    for package, conda in (("torch", "pytorch"), ("torchvision", "torchvision")):
        version = next(d.split("==")[1] for d in deps if _name(d) == package)
        assert f"{conda}={version}" in env


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_lock_file_pins_every_dependency_at_its_pin():
    """requirements.lock (make lock) holds every package of pyproject.toml at one exact
    version, the pinned ones at their pin; `make setup` installs from it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    locked: dict[str, set[str]] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, version = line.split(";")[0].strip().split("==")
            locked.setdefault(_normal(name), set()).add(version)
    for dep in project["dependencies"] + project["optional-dependencies"]["dev"]:
        name = _normal(_name(dep))
        assert name in locked, f"{name} missing from requirements.lock: run make lock"
        if "==" in dep:
            assert locked[name] == {dep.split("==")[1].strip()}, name
    assert len(locked) > 100  # the whole environment, not only the direct dependencies
    assert "-r $(LOCK)" in (ROOT / "Makefile").read_text()
