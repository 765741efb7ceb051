"""The label loop process (selector labels): dataset store, retrain triggers, status."""
