"""The sections of the Part 3 benchmark, one module each, mixed into ``StreamingBenchmark``."""
