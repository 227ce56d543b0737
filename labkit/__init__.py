"""labkit: the helper package behind the transfer-learning course.

The surgery core is importable from the top level::

    from labkit import freeze, replace_head, trainable_report, param_groups

Everything else lives in one module per concept (``labkit.models``, ``labkit.data``,
``labkit.filters``, ``labkit.train``, ``labkit.history``, ``labkit.device``, ``labkit.seed``,
``labkit.measure``, ``labkit.features``, ``labkit.strategy``, ``labkit.compare``,
``labkit.stats``, ``labkit.interpret``, ``labkit.widgets``, ``labkit.grading``); import what a lesson needs from
there. The tools that build the course (the bundled datasets, the probe, the Colab rehearsal,
the benchmark) live apart in the checkout's ``tools/``, outside the package.

``quick_run()`` tells a lesson whether the course's structure check asked for a quick pass
(``LABKIT_QUICK=1``: fewer seeds and epochs; the printed numbers always come from full runs).
"""
from labkit._env import quick_run
from labkit.freeze import freeze, freeze_to, frozen_guard, trainable_report, unfreeze
from labkit.heads import get_head, replace_head, stages
from labkit.optim import check_optimizer, gradual_unfreeze, param_groups

__version__ = "0.1.0"

# Where the course lives; the Colab setup cells install labkit from here.
REPOSITORY_URL = "https://github.com/labkit-course/labkit"

__all__ = [
    "freeze",
    "unfreeze",
    "freeze_to",
    "trainable_report",
    "frozen_guard",
    "get_head",
    "replace_head",
    "stages",
    "param_groups",
    "gradual_unfreeze",
    "check_optimizer",
    "quick_run",
    "REPOSITORY_URL",
    "__version__",
]
