"""Configuration files, secrets, start-up checks and hot reload."""
