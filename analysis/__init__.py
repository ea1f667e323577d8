"""Results tree -> tidy run table -> selection -> tables and figures (pure functions; I/O at the edges)."""

from .loader import CURVES, AnalysisError, LoadReport, curves_long, load_runs
from .select import MODES, rank_settings, select_best, summarize

__all__ = [
    "AnalysisError",
    "CURVES",
    "LoadReport",
    "MODES",
    "curves_long",
    "load_runs",
    "rank_settings",
    "select_best",
    "summarize",
]
