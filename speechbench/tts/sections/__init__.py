"""The sections of the Part 1 benchmark, one module each, mixed into ``TTSBenchmark``."""
