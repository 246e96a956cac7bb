"""Anomaly maps: one module per predictor family, a registry, ensembles and the volume pipeline."""
