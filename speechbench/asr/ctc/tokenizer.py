"""Characters <-> ids for the CTC models, and the text normalization that makes training targets.

Vocabulary: index 0 is the CTC blank, then space, apostrophe and a-z (29 symbols). Targets are what the
model can spell: ``texts.normalize`` (the corpus's own sentence normalizer: lowercase, accents and
punctuation stripped, apostrophes inside words kept), then numbers spelled out, then anything else
outside the vocabulary dropped. Scoring in Part 2 uses its own normalizer on both sides; this one only
has to be consistent between training targets and the model's output.
"""

from __future__ import annotations

import re

from speechbench.speech.texts import normalize

BLANK = 0
CHARS = " 'abcdefghijklmnopqrstuvwxyz"

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """0..999999 as English words ("one hundred twenty three"); larger numbers digit by digit."""
    if n < 0:
        raise ValueError("non-negative integers only")
    if n >= 1_000_000:
        return " ".join(_ONES[int(d)] for d in str(n))
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))
    return number_words(n // 1000) + " thousand" + ("" if n % 1000 == 0 else " " + number_words(n % 1000))


def _spell_digits(match: re.Match[str]) -> str:
    digits = match.group(0)
    # A leading zero ("007") is read digit by digit, as people read codes.
    if len(digits) > 1 and digits.startswith("0"):
        return " ".join(_ONES[int(d)] for d in digits)
    return number_words(int(digits))


def normalize_target(text: str) -> str:
    """Text -> the character string a model is trained to emit (and compared against in validation)."""
    text = re.sub(r"\d+", _spell_digits, normalize(text))
    text = "".join(c for c in text if c in CHARS)
    return " ".join(text.split())


class Tokenizer:
    """Maps normalized text to ids 1..len(CHARS) and back; 0 is reserved for the CTC blank."""

    def __init__(self, chars: str = CHARS) -> None:
        if len(set(chars)) != len(chars):
            raise ValueError("duplicate characters in the vocabulary")
        self.chars = chars
        self._index = {c: i + 1 for i, c in enumerate(chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1  # + blank

    def encode(self, text: str, normalized: bool = False) -> list[int]:
        """Ids of ``text`` (normalized first unless ``normalized``); unknown characters are dropped."""
        if not normalized:
            text = normalize_target(text)
        return [self._index[c] for c in text if c in self._index]

    def decode(self, ids: list[int]) -> str:
        """Ids -> text; blanks and out-of-range ids are skipped, spaces tidied."""
        text = "".join(self.chars[i - 1] for i in ids if 0 < i <= len(self.chars))
        return " ".join(text.split())
