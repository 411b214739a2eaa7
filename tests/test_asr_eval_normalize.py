"""The scoring normalizer: the same conventions on both sides (see speechbench/asr_eval/normalize.py)."""

from __future__ import annotations

import pytest

from speechbench.asr_eval.normalize import cardinal, normalize_text, ordinal, year
from speechbench.asr_eval.scoring import score


@pytest.mark.parametrize("text, expected", [
    ("Hello, World!", "hello world"),
    ("  several   spaces\tand\nnewlines ", "several spaces and newlines"),
    ("Some years ago\u2014never mind how long", "some years ago never mind how long"),
    ("a well-known twenty-one", "a well known twenty one"),
    ("Caf\u00e9 na\u00efve", "cafe naive"),
    ("I can't, you won't, they cannot", "i can not you will not they can not"),
    ("We'd they're I'm you've he'll isn't", "we would they are i am you have he will is not"),
    ("It\u2019s John's dog", "it's john's dog"),  # 's kept: possessive / is / has is ambiguous
    ("Whether 'tis nobler", "whether it is nobler"),
    ("'quoted' words", "quoted words"),
    ("Um, hello [noise] uh (laughs) world <unk>", "hello world"),
    ("Mr. Smith met Dr. Jones, OK?", "mister smith met doctor jones okay"),
    ("The harbour colour of the theatre", "the harbor color of the theater"),
    ("Four score and 7 years", "four score and seven years"),
    ("105 people", "one hundred five people"),
    ("1,000,000 and 1,234", "one million and one thousand two hundred thirty four"),
    ("3.14 and 0.5", "three point one four and zero point five"),
    ("the 1st, 2nd, 3rd, 12th and 21st", "the first second third twelfth and twenty first"),
    ("in 1984, 1905, 1900, 2000, 2005 and 2024",
     "in nineteen eighty four nineteen oh five nineteen hundred two thousand two thousand five and twenty "
     "twenty four"),
    ("the 1990s and the '80s", "the nineteen nineties and the eighties"),
    ("the 1900s", "the nineteen hundreds"),
    ("at 4:30 or 10:05", "at four thirty or ten oh five"),
    ("50% off $5.50 or $1", "fifty percent off five dollars fifty cents or one dollar"),
    ("salt & pepper", "salt and pepper"),
    ("agent 007", "agent zero zero seven"),
    ("", ""),
    ("?!...", ""),
])
def test_normalize_cases(text, expected):
    assert normalize_text(text) == expected


def test_normalizer_is_idempotent_and_symmetric():
    for t in ["She sells 3 fish, doesn't she?", "The 1990s' colour", "It's 4:30 - we'll go"]:
        once = normalize_text(t)
        assert normalize_text(once) == once
    # the same spoken words written two ways score as identical
    assert score("Four score and seven years ago", "4 score and 7 years ago").errors == 0
    assert score("I can not go", "I can't go").errors == 0
    assert score("The harbor is gray", "The harbour is grey.").errors == 0


def test_number_words():
    assert cardinal(0) == "zero"
    assert cardinal(19) == "nineteen"
    assert cardinal(40) == "forty"
    assert cardinal(101) == "one hundred one"
    assert cardinal(2_000_013) == "two million thirteen"
    assert ordinal(1) == "first" and ordinal(20) == "twentieth" and ordinal(103) == "one hundred third"
    assert year(1066) == "ten sixty six" and year(2010) == "twenty ten" and year(1800) == "eighteen hundred"
