"""Plumbing: errors, atomic file writes, registries, named fault points. Imports nothing else of ours."""
