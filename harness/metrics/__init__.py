"""Metrics computed from a run's predictions: headline accuracies and the shifted test sets."""
