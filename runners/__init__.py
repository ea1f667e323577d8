"""Runners: one DeepOBS-format training run (``run``), a long-lived worker (``worker``), YAML study
configs (``config``), the paper's random-search sampler (``sampler``), sweeps (``sweep``) and the executors on
top: the ledger (``ledger``), the local pool and scheduling loop (``pool``), Ray (``ray_executor``), and the
run-spec <-> command line mapping (``commandline``).

Importing this package does not import TensorFlow or Keras; ``runners.run`` imports them lazily.
"""

from runners.spec import RunSpec

__all__ = ["RunSpec"]
