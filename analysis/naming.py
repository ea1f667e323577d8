"""Moved to ``deepobs_tree.naming`` (the results-format package); kept so branches in flight still import."""

from deepobs_tree.naming import *  # noqa: F403
from deepobs_tree.naming import __all__  # noqa: F401
