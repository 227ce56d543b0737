"""Settings for every test, the unit tests and the notebooks nbval runs alike.

Set before anything imports labkit, torch or matplotlib; nbval's kernels inherit them.
"""
import os

os.environ.setdefault("LABKIT_OFFLINE", "1")  # EfficientNet-Lite0 from its installed package, never a download
os.environ.setdefault("LABKIT_PROGRESS", "0")  # no progress bars in test output
os.environ.setdefault("MPLBACKEND", "Agg")
# The suite runs as two pytest-xdist workers on a 2-core machine (see the README's test command):
# one OpenMP thread each keeps the workers from spinning against each other, and small models
# train faster on one thread anyway. A learner's own runs are not affected.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# The longest test files first. pytest-xdist's --dist loadfile --no-loadscope-reorder hands whole
# files to the two workers in collection order (without that flag xdist puts the files with the
# most tests first, whatever their duration), so the long ones start at once and the hundreds of short ones
# fill in at the end (longest first: no worker idles while the other finishes a lesson).
# Measured with --durations=0 on 2 cores; an entry that goes stale only costs balance.
LONGEST_FIRST = (
    "solutions/05_medical_domain_adaptation.ipynb",
    "solutions/06_parameter_efficient_finetuning.ipynb",
    "tests/test_grading_batch.py",
    "tests/test_grading_attacks.py",
    "tests/test_grading_validate.py",
    "solutions/04_choosing_a_strategy.ipynb",
    "solutions/03_discriminative_lr.ipynb",
    "solutions/01_feature_extraction.ipynb",
    "tests/test_tools_rehearse.py",
    "tests/test_browser_widgets.py",
    "solutions/00_pretrained_models.ipynb",
    "tests/test_heads.py",
    "tests/test_grading_checks.py",
    "tests/test_models.py",
)


def pytest_collection_modifyitems(config, items):
    root = config.rootpath
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def key(item):
        try:
            name = item.path.relative_to(root).as_posix()
        except ValueError:
            name = str(item.path)
        return rank.get(name, len(LONGEST_FIRST))

    items.sort(key=key)  # stable: tests keep their order within a file
