"""DeepOBS data sets as NumPy pipelines (no TensorFlow, no Keras): see `load_dataset` and data.md.

`python -m testproblems prepare-data` (module `testproblems.data.prepare`) downloads and prepares the
files; `testproblems.data.synthetic` writes small files in the same formats for tests.
"""

from ._common import DATASETS, FIDELITIES, FOLDERS, PHASES, DataError, default_data_dir, fix_command
from .datasets import Dataset, load_dataset
from .readers import clear_cache

__all__ = [
    "DATASETS",
    "FIDELITIES",
    "FOLDERS",
    "PHASES",
    "DataError",
    "Dataset",
    "clear_cache",
    "default_data_dir",
    "fix_command",
    "load_dataset",
]
