"""The monitor process (selector run): the batch loop, per-record routing, cap watch."""
