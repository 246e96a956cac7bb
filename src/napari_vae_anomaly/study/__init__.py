"""The study: train a beta sweep, run every predictor, ensembles and trivial baselines, evaluate.

Modules: :mod:`.config` (what to run), :mod:`.phantom_data` (where the volumes come from),
:mod:`.baselines` (numpy score maps without a model), :mod:`.runner` (``run_study``),
:mod:`.plots` (PNG figures, matplotlib Agg) and :mod:`.calibrate` (threshold and ensemble
weights fitted to a user's corrected slices; used by the Evaluation widget).
No module here imports Qt or napari.
"""
