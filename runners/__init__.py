"""Runners: one DeepOBS-format training run (``run``), a long-lived worker (``worker``), YAML study
configs (``config``), the paper's random-search sampler (``sampler``), sweeps (``sweep``) and on
top: the ledger (``ledger``), the executors (``executors``: the scheduling loop, the local pool, Ray), and the
run-spec <-> command line mapping (``commandline``).

Importing this package does not import TensorFlow or Keras; ``runners.run`` imports them lazily.
"""

from runners.spec import RunSpec

__all__ = ["RunSpec"]
