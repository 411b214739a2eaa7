"""How many mel frames a request gets.

The seed's weights are untrained, so its stop head fires at random (often on the first step), which
makes output lengths noise and benchmarks irreproducible. A length policy sets the length from the text
instead: real English speech runs at about 12-15 characters per second and a 22.05 kHz / hop-256 mel has
~86 frames per second, so ~6.6 frames per character, clamped to the seed's ``max_length`` of 500 frames.
The stop head still runs every step; with trained weights (``honor_stop``) it ends a sequence early.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LengthPolicy:
    frames_per_char: float = 86.13 / 13.0  # ~86 frames/s at ~13 characters/s
    min_frames: int = 1
    max_frames: int = 500  # the seed's decode_mel max_length
    honor_stop: bool = False  # True with trained weights: stop when sigmoid(stop) > threshold
    stop_threshold: float = 0.5

    def frames_for(self, n_chars: int) -> int:
        return int(min(self.max_frames, max(self.min_frames, round(self.frames_per_char * n_chars))))
