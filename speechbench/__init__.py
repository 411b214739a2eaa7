"""speechbench: the package the three benchmark scripts at the repository root stand on."""

__version__ = "0.1.0"
