"""Saving report figures: one place for the layout, resolution and cleanup every report uses."""

from __future__ import annotations

from pathlib import Path


def save_figure(fig, out_dir: Path, filename: str, dpi: int = 120) -> str:
    """Lay out, write and close ``fig`` as ``out_dir/filename``; returns the file name for the Markdown link.

    Closing matters: a report renders several figures, and pyplot keeps every open one alive.
    """
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(Path(out_dir) / filename, dpi=dpi)
    plt.close(fig)
    return filename
