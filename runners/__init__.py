"""Runners (the writer): one DeepOBS-format training run (``run``), a long-lived worker (``worker``), YAML
study configs (``config``), the paper's random-search sampler (``sampler``), the ledger (``ledger``), the
executors (``executors``: the scheduling loop, the local pool, Ray) and the run-spec <-> command line mapping
(``commandline``). The sweep and its status, which also need the analysis' selection, are ``studies``.

Importing this package does not import TensorFlow or Keras; ``runners.run`` imports them lazily.
"""

from runners.spec import RunSpec

__all__ = ["RunSpec"]
