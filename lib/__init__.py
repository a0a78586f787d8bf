"""sparse-vp: the hidden cost of model compression, as a notebook lab.

Packages, lowest first; a module imports only its own package and the ones before it
(tests/test_imports.py checks this order, kept in LAYERS):

    core < datasets < models < metrics < adapt < study < report

The top-level modules are shims that keep the documented names (lib.data, lib.backbone,
lib.labelmap, lib.calibration, lib.quant) and commands (python -m lib.sweep, lib.transfer,
lib.tickets, lib.compare, lib.fake_data) working; they only re-export (docs/architecture.md).
"""

import sys

LAYERS = ("core", "datasets", "models", "metrics", "adapt", "study", "report")
# What every command imports first: a Python without them is not the project's environment.
REQUIRED = ("numpy", "torch", "yaml", "tqdm", "pandas", "papermill")


def check_environment() -> None:
    """Exit 2 with one line when this Python lacks the project's packages: `python3 -m
    lib.sweep` outside .venv would end in an ImportError traceback for the first one."""
    from importlib.util import find_spec

    missing = [name for name in REQUIRED if find_spec(name) is None]
    if not missing:
        return
    argv = getattr(sys, "orig_argv", sys.argv)
    module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else "lib.sweep"
    print(
        f"python -m {module}: error: this Python ({sys.executable}) lacks the project's "
        f"packages (no {', '.join(missing)}); run `.venv/bin/python -m {module} ...` "
        "(`make setup` creates .venv) or use make (`make study`)",
        file=sys.stderr,
    )
    raise SystemExit(2)


if sys.argv[:1] == ["-m"]:  # `python -m lib.<command>`: argv[0] is "-m" while it is located
    check_environment()
