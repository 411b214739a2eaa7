"""Pieces shared by all three benchmarks: result files, CLI conventions."""
