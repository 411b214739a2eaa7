"""The scoring normalizer: one function, applied to the reference and to the hypothesis alike.

WER is only meaningful when both sides are written the same way, so ``normalize_text`` maps both to one
spoken-form spelling. Conventions (compare Whisper's ``EnglishTextNormalizer``, which the Open ASR
Leaderboard uses; the differences are deliberate and listed):

* Unicode: compatibility-folded, accents stripped ("café" -> "cafe"), lowercased.
* Annotations in brackets are dropped: ``[noise]``, ``(laughs)``, ``<unk>``. (Whisper: same.)
* Hyphens and dashes separate words: "twenty-one" -> "twenty one", "ago—never" -> "ago never".
* Numbers are spelled out as words (Whisper does the opposite, words -> digits; our references are written
  in words, so spelling the hypothesis' digits keeps the reference untouched): cardinals in American style
  without "and" ("105" -> "one hundred five"), thousands separators dropped ("1,000" -> "one thousand"),
  decimals digit by digit ("3.14" -> "three point one four"), ordinals ("21st" -> "twenty first"),
  plausible years read as years ("1984" -> "nineteen eighty four", "1905" -> "nineteen oh five",
  "2000" -> "two thousand", "2024" -> "twenty twenty four"), decades ("1990s" -> "nineteen nineties",
  "80s" -> "eighties"), clock times ("4:30" -> "four thirty"), "%" -> "percent", "$5" -> "five dollars",
  "&" -> "and". A number spelled "one hundred and five" in a reference keeps its "and": references are
  not rewritten to digits and back.
* Contractions: unambiguous ones are expanded on both sides ("won't" -> "will not", "can't" / "cannot" ->
  "can not", "n't" -> " not", "'re" -> " are", "'m" -> " am", "'ll" -> " will", "'ve" -> " have",
  "'d" -> " would", "'tis" -> "it is", "let's" -> "let us"). "'s" is kept attached ("john's", "it's"):
  it is a possessive, "is" or "has", and guessing would invent errors. (Whisper expands the same set but
  then turns the remaining apostrophes into spaces, "john's" -> "john s"; we keep the apostrophe.)
* A short list of British spellings is mapped to American ("harbour" -> "harbor", "colour" -> "color"):
  Whisper writes either depending on the audio's accent and that is not a recognition error. (Whisper uses
  a ~1,700-entry list; ours covers the common -our/-re/-ise patterns by word, not by rule, because rules
  break "hour", "four", "your", "acre", "rise".)
* A few abbreviations are expanded ("mr" -> "mister", "mrs" -> "missus", "dr" -> "doctor", "ok" ->
  "okay") and hesitations dropped ("uh", "um", "hmm", "mm", "mhm"), as Whisper does.
* Everything else that is not a letter, digit or in-word apostrophe becomes a space; spaces collapse.
"""

from __future__ import annotations

import re
import unicodedata

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_IRREGULAR = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                      "nine": "ninth", "twelve": "twelfth"}


def cardinal(n: int) -> str:
    """Non-negative integer -> American English words without "and" (105 -> "one hundred five")."""
    if n < 0:
        return "minus " + cardinal(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + cardinal(n % 100))
    if n >= 10**15:  # beyond any scale word people say: read digit by digit
        return " ".join(_ONES[int(d)] for d in str(n))
    for value, word in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return cardinal(head) + " " + word + ("" if rest == 0 else " " + cardinal(rest))
    raise AssertionError(n)  # unreachable


def ordinal(n: int) -> str:
    """21 -> "twenty first", 100 -> "one hundredth"."""
    words = cardinal(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def year(n: int) -> str:
    """How a year is said: 1984 -> "nineteen eighty four", 1905 -> "nineteen oh five", 1900 -> "nineteen
    hundred", 2000..2009 -> "two thousand (n)", 2010.. -> "twenty ten"."""
    if 2000 <= n <= 2009:
        return cardinal(n)
    hi, lo = divmod(n, 100)
    if lo == 0:
        return cardinal(hi) + " hundred"
    if lo < 10:
        return cardinal(hi) + " oh " + _ONES[lo]
    return cardinal(hi) + " " + cardinal(lo)


def _plural_word(phrase: str) -> str:
    """The plural of a spelled number's last word: "nineteen ninety" -> "nineteen nineties"."""
    words = phrase.split()
    last = words[-1]
    if last.endswith("y"):
        words[-1] = last[:-1] + "ies"
    elif last.endswith("x"):
        words[-1] = last + "es"
    else:
        words[-1] = last + "s"
    return " ".join(words)


def _is_year(n: int) -> bool:
    return 1100 <= n <= 2099


def _digits(s: str) -> str:
    return " ".join(_ONES[int(d)] for d in s)


def _number(token: str) -> str:
    """A digit string (commas allowed, one decimal point allowed) -> words."""
    token = token.replace(",", "")
    if "." in token:
        whole, frac = token.split(".", 1)
        head = cardinal(int(whole)) if whole else "zero"
        return f"{head} point {_digits(frac)}" if frac else head
    if len(token) > 1 and token.startswith("0"):
        return _digits(token)  # codes and zero-padded numbers are read digit by digit
    return cardinal(int(token))


_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
             "€": ("euro", "euros", "cent", "cents")}


def _currency(m: re.Match[str]) -> str:
    sym, amount = m.group(1), m.group(2).replace(",", "")
    one, many, sub_one, sub_many = _CURRENCY[sym]
    whole, _, frac = amount.partition(".")
    w = int(whole or 0)
    out = f"{cardinal(w)} {one if w == 1 else many}"
    if frac:
        c = int((frac + "0")[:2])
        if c:
            out += f" {cardinal(c)} {sub_one if c == 1 else sub_many}"
    return f" {out} "


def _clock(m: re.Match[str]) -> str:
    h, mnt = int(m.group(1)), int(m.group(2))
    if mnt == 0:
        return f" {cardinal(h)} "
    if mnt < 10:
        return f" {cardinal(h)} oh {_ONES[mnt]} "
    return f" {cardinal(h)} {cardinal(mnt)} "


def _decade(m: re.Match[str]) -> str:
    digits = m.group(1)
    n = int(digits)
    if len(digits) == 2:
        return " " + _plural_word(cardinal(n) if n >= 10 else _ONES[n]) + " "
    return " " + _plural_word(year(n) if _is_year(n) else cardinal(n)) + " "  # 1900s: nineteen hundreds


def _ordinal(m: re.Match[str]) -> str:
    return " " + ordinal(int(m.group(1).replace(",", ""))) + " "


def _plain_number(m: re.Match[str]) -> str:
    token = m.group(0)
    if re.fullmatch(r"\d{4}", token) and _is_year(int(token)):
        return " " + year(int(token)) + " "
    return " " + _number(token) + " "


def spell_numbers(text: str) -> str:
    """Digits in running text -> words (see the module docstring for the readings chosen)."""
    text = re.sub(r"([$£€])\s?(" + _NUM + r")", _currency, text)
    text = re.sub(r"(" + _NUM + r")\s?%", lambda m: f" {_number(m.group(1))} percent ", text)
    text = re.sub(r"\b(\d{1,2}):(\d{2})\b", _clock, text)
    text = re.sub(r"'?\b(\d{2}|\d{4})'?s\b", _decade, text)
    text = re.sub(r"\b(\d+(?:,\d{3})*)(?:st|nd|rd|th)\b", _ordinal, text)
    text = re.sub(_NUM, _plain_number, text)
    return text


# After lowercasing and apostrophe folding. Order matters: whole-word forms before suffixes.
_CONTRACTIONS: tuple[tuple[str, str], ...] = (
    (r"\bwon't\b", "will not"),
    (r"\bcan't\b", "can not"),
    (r"\bcannot\b", "can not"),
    (r"\bshan't\b", "shall not"),
    (r"\blet's\b", "let us"),
    (r"\by'all\b", "you all"),
    (r"(?:^|(?<=\s))'tis\b", "it is"),
    (r"(?:^|(?<=\s))'twas\b", "it was"),
    (r"\b(\w+)n't\b", r"\1 not"),
    (r"\b(\w+)'re\b", r"\1 are"),
    (r"\b(\w+)'m\b", r"\1 am"),
    (r"\b(\w+)'ll\b", r"\1 will"),
    (r"\b(\w+)'ve\b", r"\1 have"),
    (r"\b(\w+)'d\b", r"\1 would"),
)

BRITISH_TO_AMERICAN: dict[str, str] = {
    w: a for pair in (
        "harbour harbor", "harbours harbors", "colour color", "colours colors", "coloured colored",
        "favourite favorite", "favourites favorites", "favour favor", "flavour flavor", "honour honor",
        "humour humor", "labour labor", "neighbour neighbor", "neighbours neighbors", "neighbourhood "
        "neighborhood", "behaviour behavior", "rumour rumor", "vapour vapor", "odour odor", "armour armor",
        "centre center", "centres centers", "theatre theater", "theatres theaters", "metre meter",
        "metres meters", "litre liter", "litres liters", "fibre fiber", "organise organize",
        "organised organized", "realise realize", "realised realized", "recognise recognize",
        "recognised recognized", "apologise apologize", "travelled traveled", "travelling traveling",
        "traveller traveler", "cancelled canceled", "jewellery jewelry", "grey gray", "programme program",
        "tyre tire", "tyres tires", "plough plow", "mould mold", "moustache mustache", "pyjamas pajamas",
        "aluminium aluminum", "defence defense", "offence offense", "licence license", "cheque check",
        "catalogue catalog", "dialogue dialog", "analyse analyze", "paralysed paralyzed", "sceptical "
        "skeptical", "storey story", "kerb curb", "whilst while", "amongst among",
    ) for w, a in [pair.split()]
}

ABBREVIATIONS: dict[str, str] = {"mr": "mister", "mrs": "missus", "dr": "doctor", "ok": "okay", "vs": "versus"}
FILLERS: frozenset[str] = frozenset({"uh", "um", "umm", "hmm", "hm", "mm", "mmm", "mhm", "er", "erm"})

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'"})
_DASHES = re.compile(r"[\u2010-\u2015\u2212-]")
_BRACKETS = re.compile(r"\[[^\]]*\]|\([^)]*\)|<[^>]*>|\{[^}]*\}")


def normalize_text(text: str) -> str:
    """The scored form of a reference or a hypothesis (see the module docstring for the conventions)."""
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", text)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.translate(_APOSTROPHES).lower()
    text = _BRACKETS.sub(" ", text)
    text = _DASHES.sub(" ", text)
    text = text.replace("&", " and ").replace("+", " plus ").replace("@", " at ")
    text = spell_numbers(text)
    for pattern, repl in _CONTRACTIONS:
        text = re.sub(pattern, repl, text)
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    text = re.sub(r"(?<![a-z0-9])'|'(?![a-z0-9])", " ", text)  # quote marks, not in-word apostrophes
    words = []
    for w in text.split():
        w = BRITISH_TO_AMERICAN.get(w, w)
        w = ABBREVIATIONS.get(w, w)
        if w in FILLERS:
            continue
        words.extend(w.split())
    return " ".join(words)


def words(text: str) -> list[str]:
    """The scored word list of ``text`` (already normalized text is left as is)."""
    return normalize_text(text).split()
