"""One module per figure kind: ``heatmap`` (two axes), ``lines`` (one axis, and the
relabelling metrics), ``recall`` (Recall@K at the selected cells), ``hierarchy`` (wrapper vs
base), ``convergence`` (per-epoch curves), ``study`` (Optuna's plots). Each returns
:class:`bench.report.output.Figure` records with the numbers it drew."""
