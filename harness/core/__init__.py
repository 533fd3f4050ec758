"""Core: the run configuration, the method protocol and its registry, model loading, the run store."""
