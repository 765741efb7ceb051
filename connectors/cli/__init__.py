"""The command line: one entry point, each command's arguments and handler."""
