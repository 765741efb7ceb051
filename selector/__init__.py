"""selector: the pure decision core of the streaming selective-sampling monitor.

Nothing in this package performs I/O, reads the clock or uses global randomness; the shell in
``connectors`` feeds it decoded batches, the current time and a seed.
"""

__version__ = "0.1.0"
