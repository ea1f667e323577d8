"""The seeds of the study's protocol (protocol §3), shared by the writer (``runners``) and the reader
(``analysis``): every tuning run uses TUNING_SEED (DeepOBS' default ``random_seed``), and the chosen setting
is rerun with RERUN_SEEDS, so a search's final statistics are over seeds 42-51. SEARCHED names the
hyperparameters the built-in searches vary (protocol §3.2, Crowded Valley's momentum, §6): the reader groups
a search's tuning runs by everything else, and ``optimizers.distributions.DEFAULT_SEARCH`` holds their
distributions, in this order."""

TUNING_SEED = 42
RERUN_SEEDS: tuple[int, ...] = tuple(range(43, 52))

SEARCHED: tuple[str, ...] = ("learning_rate", "power", "momentum")
