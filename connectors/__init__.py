"""The imperative shell of selector: Kafka, HTTP, files, clock, signals and the command line."""
