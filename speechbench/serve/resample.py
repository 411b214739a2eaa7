"""Resampling of a live stream, frame by frame, without seams at frame boundaries.

``resample_poly`` on each frame alone would zero-pad both edges of every frame (a click every 20-40 ms).
Here input is consumed in whole polyphase periods (``down`` samples; a remainder waits for the next
frame), each block is filtered together with the ``2 h`` input samples before it, and only the outputs
with ``h`` real samples of context on both sides are returned (``h`` exceeds the filter's half length).
The output is the whole-signal resampling delayed by ``h`` input samples (a few ms of leading silence),
which tests/test_serve.py checks on a chunked sine.
"""

from __future__ import annotations

from math import ceil, gcd

import numpy as np
from scipy.signal import resample_poly


class StreamResampler:
    def __init__(self, orig_sr: int, target_sr: int = 16000) -> None:
        g = gcd(orig_sr, target_sr)
        self.up, self.down = target_sr // g, orig_sr // g
        self.identity = orig_sr == target_sr
        # resample_poly's default filter spans 10 periods of the slower rate on each side: < 64 input samples
        # for every rate in config.SUPPORTED_RATES.
        self.h = self.down * ceil(64 / self.down)
        self.tail = np.zeros(2 * self.h, dtype=np.float32)  # left context: silence before the stream
        self.pending = np.zeros(0, dtype=np.float32)  # input short of a whole period

    @property
    def delay_samples_out(self) -> int:
        return self.h * self.up // self.down

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32, copy=False)
        if self.identity:
            return x
        data = np.concatenate([self.pending, x])
        n = len(data) // self.down * self.down
        self.pending = data[n:]
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        buf = np.concatenate([self.tail, data[:n]])
        y = resample_poly(buf, self.up, self.down)
        start = self.h * self.up // self.down
        stop = (len(buf) - self.h) * self.up // self.down
        self.tail = buf[-2 * self.h:]
        return y[start:stop].astype(np.float32)
