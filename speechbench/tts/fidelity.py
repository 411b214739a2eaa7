"""How close an optimized variant's mel output is to the reference's.

* frame agreement: same number of frames (a length change is a fidelity failure in itself);
* max |diff| and relative L2 (||a-b|| / ||b||) over the common frames: the fp32 bar is <= 1e-4 max-abs,
  the reduced-precision bar (the seed's "within 5% of baseline quality") is rel L2 <= 0.05;
* mel-cepstral distortion (dB): the mel frames are treated as log-mel, turned into cepstra with an
  orthonormal DCT-II, c0 (energy) dropped, MCD = 10/ln10 * sqrt(2 * sum_d (c_d - c'_d)^2) averaged over
  frames: the usual TTS objective measure, in a unit speech people read.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.fft import dct

MCD_COEFFS = 24  # c1..c24, a common choice for 80-bin mels


def mel_cepstral_distortion(mel: torch.Tensor, ref: torch.Tensor, n_coeffs: int = MCD_COEFFS) -> float:
    t = min(mel.size(0), ref.size(0))
    a = dct(mel[:t].double().numpy(), type=2, norm="ortho", axis=-1)[:, 1 : n_coeffs + 1]
    b = dct(ref[:t].double().numpy(), type=2, norm="ortho", axis=-1)[:, 1 : n_coeffs + 1]
    per_frame = (10.0 / math.log(10.0)) * np.sqrt(2.0 * ((a - b) ** 2).sum(axis=-1))
    return float(per_frame.mean())


def compare_mels(mel: torch.Tensor, ref: torch.Tensor) -> dict[str, float | int | bool]:
    """Fidelity of ``mel`` (T, D) against ``ref`` (T', D) on their common frames."""
    t = min(mel.size(0), ref.size(0))
    a, b = mel[:t].double(), ref[:t].double()
    diff = a - b
    return {
        "frames": int(mel.size(0)),
        "ref_frames": int(ref.size(0)),
        "frames_equal": bool(mel.size(0) == ref.size(0)),
        "max_abs_diff": float(diff.abs().max()) if t else float("nan"),
        "rel_l2": float(diff.norm() / b.norm().clamp_min(1e-12)) if t else float("nan"),
        "mcd_db": mel_cepstral_distortion(mel, ref) if t else float("nan"),
    }


def aggregate(rows: list[dict]) -> dict[str, float]:
    """Worst case over texts (a bar must hold for every text, not on average)."""
    if not rows:
        return {}
    return {
        "texts": len(rows),
        "frame_agreement": float(np.mean([r["frames_equal"] for r in rows])),
        "max_abs_diff": float(max(r["max_abs_diff"] for r in rows)),
        "rel_l2_max": float(max(r["rel_l2"] for r in rows)),
        "rel_l2_mean": float(np.mean([r["rel_l2"] for r in rows])),
        "mcd_db_mean": float(np.mean([r["mcd_db"] for r in rows])),
        "mcd_db_max": float(max(r["mcd_db"] for r in rows)),
    }
