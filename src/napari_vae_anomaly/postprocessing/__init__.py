"""From anomaly maps to masks: thresholds, filtering, connected components."""
