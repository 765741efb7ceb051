"""The model side: the built-in trainer, the registry and serve-model."""
