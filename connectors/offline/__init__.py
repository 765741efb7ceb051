"""Offline tools: replay, calibration from labels, the replay report, recorded streams."""
