"""Every report figure by name, for the notebooks (`from lib.report import plots`); each lives
in the module of the report section it serves."""

from lib.report.accuracy import (  # noqa: F401
    networks,
    paired_effects,
    paper_metric,
    quantization,
    versus_sparsity,
)
from lib.report.calibration import (  # noqa: F401
    bias_of_estimators,
    confidence,
    ece_estimators,
    ece_intervals,
    equal_accuracy,
    reliability_pair,
)
from lib.report.figures import (  # noqa: F401
    METHOD_NAMES,
    chance_level,
    legend_entries,
    lines_vs_sparsity,
    mark_empty,
    save,
    states_line,
    tidy,
)
from lib.report.findings_figure import (  # noqa: F401
    VERDICT_COLORS,
    findings_forest,
)
from lib.report.mapping import (  # noqa: F401
    mapping_heatmaps,
    own_class,
    vp_methods_gap,
)
from lib.report.run import (  # noqa: F401
    calibration_title,
    history,
    mapping_table,
    prompt_image,
    reliability,
    run_overview,
    run_title,
)
from lib.report.source import (  # noqa: F401
    drop_by_state,
    source_accuracy_vs_sparsity,
    source_samples,
    source_training_curves,
)
