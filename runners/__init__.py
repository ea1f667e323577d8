"""Runners: one DeepOBS-format training run (``run``), a long-lived worker (``worker``), YAML study
configs (``config``), the paper's random-search sampler (``sampler``) and sweeps/executors on top.

Importing this package does not import TensorFlow or Keras; ``runners.run`` imports them lazily.
"""

from runners.spec import RunSpec

__all__ = ["RunSpec"]
