"""Studies: the paper's protocol over a study file, on top of both the writer (``runners``) and the reader
(``analysis``): the sweep (tune, select with the analysis' rule, rerun, summarise; ``sweep``), its status
(``status``) and their command line (``python -m runners sweep|status``, also ``python -m studies``).

The one package that imports both ``runners`` and ``analysis``; neither of them imports it (layers in
``.importlinter``, docs/architecture.md).
"""
