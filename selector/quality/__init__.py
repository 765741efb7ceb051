"""Quality of labels and models: votes, estimates, evaluation, calibration, drift, triggers."""
