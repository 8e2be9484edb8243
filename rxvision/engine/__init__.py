"""Training, evaluation, metrics, calibration and reports."""
