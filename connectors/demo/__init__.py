"""The demo: a simulated production line and annotators around the real processes."""
