"""LocalAgreement-n commit policy for re-decoding streaming (Macháček et al. 2023, ufal/whisper_streaming).

A re-decoding recognizer (Whisper) transcribes a stream's whole buffered audio again every interval, and
each new hypothesis may revise the last one. The policy commits a word once ``n`` consecutive hypotheses
agree on it (n = 2: the current one and the one before): the committed prefix only ever grows, so a user
sees text that no longer changes, followed by the tentative rest of the latest hypothesis.

Words are compared case- and punctuation-insensitively ("Hello," agrees with "hello"), since Whisper
changes casing and punctuation between decodes far more often than the words themselves. The committed
words keep the spelling of the hypothesis that committed them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

_STRIP = re.compile(r"[^\w']+")


def word_key(word: str) -> str:
    """A word as hypotheses are compared: lower case, punctuation dropped."""
    return _STRIP.sub("", word.lower())


def common_prefix(a: list[str], b: list[str]) -> int:
    """Number of leading words ``a`` and ``b`` agree on (compared by ``word_key``)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if word_key(x) != word_key(y):
            break
        n += 1
    return n


@dataclass
class LocalAgreement:
    """The commit state of one stream's segment. ``update`` with each new full-buffer hypothesis."""

    n: int = 2
    committed: list[str] = field(default_factory=list)
    history: list[list[str]] = field(default_factory=list)  # the last n-1 hypotheses' words past the commit
    revised: bool = False  # the last finish() changed committed words

    def update(self, hypothesis: str) -> tuple[str, str]:
        """Feed the latest hypothesis of the whole buffer; returns (committed text, tentative text)."""
        words = hypothesis.split()
        # The new hypothesis re-transcribes the committed part too: skip what it says there. When it
        # disagrees with a committed word, the committed word stands (commits are never withdrawn) and the
        # comparison goes on from the same position.
        tail = words[len(self.committed):] if common_prefix(words, self.committed) == len(self.committed) \
            else words[min(len(words), len(self.committed)):]
        if len(self.history) >= self.n - 1:
            agreed = min([len(tail)] + [common_prefix(tail, h) for h in self.history[-(self.n - 1):]])
            if agreed:
                self.committed += tail[:agreed]
                tail = tail[agreed:]
                self.history = [h[agreed:] for h in self.history]
        self.history = (self.history + [tail])[-(self.n - 1):] if self.n > 1 else []
        return " ".join(self.committed), " ".join(tail)

    def finish(self, hypothesis: str) -> str:
        """The segment ended: its final text is this last hypothesis of the whole segment, the decode with
        the most context. The committed words were a promise to partial readers; a final that disagrees
        with them replaces them (as a final result replaces interim ones in streaming APIs), and
        ``revised`` says it did. Keeping them instead and appending the hypothesis's words past their count
        (the positional splice) inserted or dropped words whenever a revision changed the word count."""
        words = hypothesis.split()
        self.revised = common_prefix(words, self.committed) < len(self.committed)
        self.committed = words
        self.history = []
        return " ".join(words)

    @property
    def text(self) -> str:
        parts = self.committed + (self.history[-1] if self.history else [])
        return " ".join(parts)

    def reset(self) -> None:
        self.committed = []
        self.history = []
        self.revised = False


@dataclass
class TokenAgreement:
    """LocalAgreement-n on token ids, committing whole words only: for a decoder that can continue a forced
    prefix (Moonshine's torch decoder), the committed tokens are fed back as that prefix, so each update
    decodes only the uncommitted tail.

    ``update(tokens)`` takes the latest hypothesis of the whole utterance (the committed prefix first, forced
    or not). Its tail (the tokens past the commit) is compared with the last n-1 tails; the longest run of
    whole words they agree on, each followed in every hypothesis by the start of another word (so no word is
    committed while it may still grow), is committed. Tokens are compared exactly (casing and punctuation
    included): stricter than the word-level policy, and it keeps the forced prefix and the text equal."""

    starts_word: Callable[[int], bool]
    n: int = 2
    committed: list[int] = field(default_factory=list)
    history: list[list[int]] = field(default_factory=list)
    tail: list[int] = field(default_factory=list)
    revised: bool = False

    def update(self, tokens: list[int]) -> None:
        k = len(self.committed)
        # a hypothesis that disagrees with a committed token leaves the commit standing (positional tail)
        tail = list(tokens[k:])
        prev = self.history[-(self.n - 1):] if self.n > 1 else []
        if len(prev) == self.n - 1:
            agreed = min([len(tail)] + [_common(tail, h) for h in prev])
            cut = 0
            for j in range(agreed, 0, -1):
                if j < len(tail) and self.starts_word(tail[j]) and all(
                        j < len(h) and self.starts_word(h[j]) for h in prev):
                    cut = j
                    break
            if cut:
                self.committed += tail[:cut]
                tail = tail[cut:]
                self.history = [h[cut:] for h in self.history]
        self.history = (self.history + [tail])[-(self.n - 1):] if self.n > 1 else []
        self.tail = tail

    def finish(self, tokens: list[int]) -> list[int]:
        """The utterance ended with this hypothesis: it is the final, whole. ``revised``: it changed tokens
        that had been committed (only a re-decode from scratch can)."""
        k = len(self.committed)
        self.revised = list(tokens[:k]) != self.committed
        self.committed = list(tokens)
        self.history = []
        self.tail = []
        return self.committed

    @property
    def tokens(self) -> list[int]:
        return self.committed + self.tail

    def reset(self) -> None:
        self.committed = []
        self.history = []
        self.tail = []
        self.revised = False


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
