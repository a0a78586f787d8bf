"""sparse-vp: the hidden cost of model compression, as a notebook lab.

Packages, lowest first; a module imports only its own package and the ones before it
(tests/test_imports.py checks this order, kept in LAYERS):

    core < datasets < models < metrics < adapt < study < report

The top-level modules are shims that keep the documented names (lib.data, lib.backbone,
lib.labelmap, lib.calibration, lib.quant) and commands (python -m lib.sweep, lib.transfer,
lib.tickets, lib.compare, lib.fake_data) working; they only re-export (docs/architecture.md).
"""

LAYERS = ("core", "datasets", "models", "metrics", "adapt", "study", "report")
