"""The Label Studio bridge: its API client, task mapping and the bridge loop."""
