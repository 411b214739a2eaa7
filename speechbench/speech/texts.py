"""Texts to speak: a fixed evaluation set and a large, seeded, synthetic training set, kept disjoint.

Evaluation sentences live in ``data/eval_sentences.txt`` (sections: ``core`` ten everyday sentences,
``seed_tts`` the seed's TTS inputs split into sentences, ``everyday`` more of our own).

Training sentences come from templates over the word lists in ``data/train_words.json`` (all written for
this project, nothing copied): tens of thousands of distinct sentences from one seed. They are meant for
small character-level CTC models, so the vocabulary is broad and includes the evaluation set's words,
but no training sentence equals an evaluation sentence or shares a run of ``NGRAM_GUARD`` words with one:
a model must not have heard the test sentences, nor long pieces of them.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

DATA = resources.files("speechbench.speech") / "data"
NGRAM_GUARD = 5  # word n-grams of this length shared with the evaluation set disqualify a training sentence

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'\u201c])")


def split_sentences(text: str) -> list[str]:
    """Split running text after . ! ? followed by a capital; good enough for the seed's texts."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def normalize(text: str) -> str:
    """Lowercase words and apostrophes only, single spaces: the form used to compare sentences.

    Dashes and other punctuation become spaces ("ago—never" -> "ago never"); accents are stripped. This
    is for matching texts, not the scoring normalizer (numbers and contractions are not expanded).
    """
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = text.replace("\u2019", "'")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)  # quote marks, not apostrophes inside words
    return " ".join(text.split())


@cache
def _eval_sections() -> dict[str, tuple[str, ...]]:
    sections: dict[str, list[str]] = {}
    current = "default"
    for raw in (DATA / "eval_sentences.txt").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("## "):
            current = line[3:].strip()
            continue
        if not line or line.startswith("#"):
            continue
        sections.setdefault(current, []).append(line)
    return {k: tuple(v) for k, v in sections.items()}


def eval_sentences(sections: Iterable[str] | None = None) -> list[str]:
    """Evaluation sentences in file order (core first), optionally only some sections."""
    all_sections = _eval_sections()
    names = list(all_sections) if sections is None else list(sections)
    unknown = [s for s in names if s not in all_sections]
    if unknown:
        raise ValueError(f"unknown evaluation section(s) {unknown}; have {list(all_sections)}")
    return [s for name in names for s in all_sections[name]]


def seed_tts_sentences(path: str | Path) -> list[str]:
    """The seed's sample_text_inputs.json texts split into sentences (the ``seed_tts`` section's source)."""
    with open(path, encoding="utf-8") as f:
        texts = json.load(f)["texts"]
    return [s for t in texts for s in split_sentences(t)]


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i: i + n]) for i in range(len(words) - n + 1)}


@cache
def _eval_guard() -> tuple[frozenset[str], frozenset[tuple[str, ...]]]:
    normed = [normalize(s) for s in eval_sentences()]
    grams: set[tuple[str, ...]] = set()
    for s in normed:
        grams |= _ngrams(s.split(), NGRAM_GUARD)
    return frozenset(normed), frozenset(grams)


def overlaps_eval(sentence: str) -> bool:
    """True if ``sentence`` is an evaluation sentence or shares NGRAM_GUARD consecutive words with one."""
    normed, grams = _eval_guard()
    n = normalize(sentence)
    return n in normed or bool(_ngrams(n.split(), NGRAM_GUARD) & grams)


# --- the training text grammar -------------------------------------------------------------------------


@cache
def _words() -> dict[str, list]:
    return json.loads((DATA / "train_words.json").read_text(encoding="utf-8"))


def _plural(noun: str) -> str:
    if re.search(r"(s|x|z|ch|sh)$", noun):
        return noun + "es"
    if re.search(r"[^aeiou]y$", noun):
        return noun[:-1] + "ies"
    return noun + "s"


def _noun(entry: str, plural: bool = False) -> str:
    sing, _, plur = entry.partition("/")
    return (plur or _plural(sing)) if plural else sing


def _verb(entry: str, form: int) -> str:
    """form: 0 base, 1 past, 2 third person, 3 -ing."""
    return entry.split()[form]


@cache
def _wide_words() -> dict[str, list[str]]:
    """Nouns, adjectives and base-form verbs from the ``wonderwords`` package's lists (MIT licence; about
    6,700 / 900 / 1,000 words), lower-case letters only, minus its own profanity list.

    They widen the hand-made grammar's ~2,000-word vocabulary: a character model trained on a small
    vocabulary learns its spellings as a prior and misspells words it never heard.
    """
    assets = resources.files("wonderwords") / "assets"

    def read(name: str) -> list[str]:
        words = (assets / f"{name}.txt").read_text(encoding="utf-8").split()
        return sorted({w for w in words if re.fullmatch(r"[a-z]+", w)})

    banned = set(read("profanitylist"))
    return {k: [w for w in read(f) if w not in banned]
            for k, f in (("nouns", "nounlist"), ("adjectives", "adjectivelist"), ("verbs", "verblist"))}


# With the wide vocabulary on, these grammar slots draw from the wide lists instead, this often.
_WIDE_SLOTS = {"things": ("nouns", 0.5), "extra_words": ("nouns", 0.7), "adjectives": ("adjectives", 0.5)}
_WIDE_VERB_SHARE = 0.35  # base-form transitive verbs (to VERB, will VERB, please VERB) drawn from the wide list


class _Grammar:
    """Slot fillers over the word lists; every choice comes from the generator passed in."""

    def __init__(self, rng: np.random.Generator, wide: bool = False) -> None:
        self.rng = rng
        self.w = _words()
        # Off, no extra random draws are made: the hand-made grammar's sentences stay exactly as they were.
        self.wide = _wide_words() if wide else None

    def pick(self, key: str, plural: bool = False) -> str:
        """A random entry of list ``key``; ``plural``: it will be pluralized, so never a wide-list word (those
        carry no irregular plural, and the regular rule would teach "childs" or "analysises")."""
        items = self.w[key]
        if self.wide is not None and key in _WIDE_SLOTS and not plural:
            wide_key, share = _WIDE_SLOTS[key]
            if self.chance(share):
                items = self.wide[wide_key]
        return items[int(self.rng.integers(len(items)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def adj(self) -> str:
        return self.pick("adjectives") + " " if self.chance(0.45) else ""

    def person(self) -> str:
        """A singular third-person subject or object (verbs agree with it in the present tense)."""
        r = self.rng.random()
        if r < 0.3:
            return self.pick("names")
        if r < 0.55:
            return f"{self.pick('possessives')} {_noun(self.pick('relatives'))}"
        if r < 0.9:
            return f"the {self.adj()}{_noun(self.pick('people'))}"
        return f"the {self.adj()}{_noun(self.pick('animals'))}"

    def subject(self) -> str:
        """Any subject for past / future tenses, where verbs do not agree with it."""
        r = self.rng.random()
        if r < 0.2:
            return self.pick("pronouns")
        if r < 0.3:
            return f"the {_noun(self.pick(self.rng.choice(['people', 'animals'])), plural=True)}"
        return self.person()

    def thing(self) -> str:
        r = self.rng.random()
        if r < 0.35:
            return f"the {self.adj()}{_noun(self.pick('things'))}"
        if r < 0.6:
            return _an(f"a {self.adj()}{_noun(self.pick('things'))}")
        if r < 0.8:
            return f"{self.pick('possessives')} {self.adj()}{_noun(self.pick('things'))}"
        return f"{self.pick('numbers')} {self.adj()}{_noun(self.pick('things', plural=True), plural=True)}"

    def food(self) -> str:
        r = self.rng.random()
        if r < 0.4:
            return f"some {self.pick('food')}"
        if r < 0.7:
            return f"the {self.adj()}{self.pick('food')}"
        return self.pick("food")

    def place(self) -> str:
        return f"the {self.adj()}{_noun(self.pick('places'))}"

    def loc(self) -> str:
        return f"{self.pick('locative_prepositions')} {self.place()}"

    def transitive(self, form: int) -> tuple[str, str]:
        """(verb, object) with an object that suits the verb."""
        if self.wide is not None and form == 0 and self.chance(_WIDE_VERB_SHARE):
            verbs = self.wide["verbs"]
            return verbs[int(self.rng.integers(len(verbs)))], self.thing()
        kind = self.rng.choice(["thing", "thing", "food", "person", "place"])
        verb = _verb(self.pick(f"verbs_{kind}"), form)
        obj = {"thing": self.thing, "food": self.food, "person": self.person, "place": self.place}[kind]()
        return verb, obj

    def intransitive(self, form: int) -> str:
        return _verb(self.pick("verbs_intransitive"), form)


def _an(phrase: str) -> str:
    return re.sub(r"\ba ([aeiou])", r"an \1", phrase)


# Templates: functions of the grammar, so each can use agreement rules. Weighted by repetition.
_TEMPLATES: list[Callable[[_Grammar], str]] = [
    lambda g: "{} {} {} {} {}.".format(g.subject(), *g.transitive(1), g.loc(), g.pick("times")),
    lambda g: "{} {} {} {}.".format(g.subject(), *g.transitive(1), g.pick("past_times")),
    lambda g: f"{g.subject()} {g.intransitive(1)} {g.pick('adverbs')} {g.loc()}.",
    lambda g: f"{g.subject()} {g.intransitive(1)} {g.loc()} {g.pick('times')}.",
    lambda g: "{} {} {} {}.".format(g.person(), *g.transitive(2), g.pick("frequencies")),
    lambda g: f"{g.person()} {g.intransitive(2)} {g.pick('adverbs')} {g.pick('frequencies')}.",
    lambda g: "{} will {} {} {}.".format(g.subject(), *g.transitive(0), g.pick("future_times")),
    lambda g: "Did {} {} {} {}?".format(g.subject(), *g.transitive(0), g.pick("past_times")),
    lambda g: "Could you please {} {} {}?".format(*g.transitive(0), g.loc()),
    lambda g: "Please {} {} before {}.".format(*g.transitive(0), g.pick("events")),
    lambda g: _an(f"There was a {g.adj()}{_noun(g.pick('animals'))} {g.loc()}."),
    lambda g: _an(f"There is a {g.adj()}{_noun(g.pick('things'))} {g.loc()}."),
    lambda g: "The {} {} was {} and {}.".format(
        _noun(g.pick("things")), g.loc(), g.pick("adjectives"), g.pick("adjectives")),
    lambda g: f"{g.subject()} was {g.intransitive(3)} {g.loc()} when {g.subject()} {g.intransitive(1)}.",
    lambda g: f"Why did {g.subject()} {g.intransitive(0)} so {g.pick('adverbs')}?",
    lambda g: "{} wanted to {} {}, but {}.".format(g.subject(), *g.transitive(0), g.pick("reasons")),
    lambda g: f"Where did {g.subject()} put {g.thing()}?",
    lambda g: f"{g.person()} and {g.person()} {g.intransitive(1)} together {g.loc()}.",
    lambda g: f"It was {g.pick('weather_adjectives')} {g.loc()} {g.pick('past_times')}.",
    lambda g: f"It is {g.pick('weather_adjectives')} {g.loc()} {g.pick('times')}.",
    lambda g: "{} {} {} and then {} {}.".format(g.subject(), *g.transitive(1), *g.transitive(1)),
    lambda g: "How many {} did {} {}?".format(
        _noun(g.pick("things", plural=True), plural=True), g.subject(), _verb(g.pick("verbs_thing"), 0)),
    lambda g: f"{g.subject()} felt {g.pick('feelings')} because {g.pick('reasons')}.",
    lambda g: f"After {g.pick('events')}, {g.subject()} {g.intransitive(1)} {g.pick('adverbs')}.",
    lambda g: f"{g.subject()} {g.pick('adverbs')} {_verb(g.pick('verbs_thing'), 1)} {g.thing()}.",
    lambda g: f"{g.person()} is {g.intransitive(3)} {g.loc()} right now.",
    lambda g: f"{g.subject()} did not {_verb(g.pick('verbs_food'), 0)} {g.food()} {g.pick('past_times')}.",
    lambda g: f"{g.subject()} {g.pick('adverbs')} said the word {g.pick('extra_words')}.",
    lambda g: f"{g.subject()} wrote the word {g.pick('extra_words')} on {g.thing()}.",
    lambda g: "The {} {} {} {} {}.".format(
        g.pick("adjectives"), _noun(g.pick("animals")), *g.transitive(1), g.pick("adverbs")),
    # Function words (with, for, by, me, us, them, were, would, should, if, which...) carry much of what a
    # character model must spell; these templates make sure it hears them in many contexts.
    lambda g: f"{g.subject()} went to {g.place()} with {g.person()} {g.pick('past_times')}.",
    lambda g: f"{g.subject()} was waiting for {g.person()} {g.loc()}.",
    lambda g: f"Are the {_noun(g.pick('things', plural=True), plural=True)} {g.loc()} {g.pick('adjectives')}?",
    lambda g: f"{_finish(g.thing())} was made by {g.person()} {g.pick('past_times')}.",
    lambda g: "Can you {} {} for me?".format(*g.transitive(0)),
    lambda g: "Would you like to {} {} with us {}?".format(*g.transitive(0), g.pick("future_times")),
    lambda g: "{} should {} {} before {}.".format(g.subject(), *g.transitive(0), g.pick("events")),
    lambda g: f"If the {g.pick('weather_nouns')} stops, {g.subject()} will {g.intransitive(0)} {g.loc()}.",
    lambda g: f"{g.subject()} gave {g.thing()} to {g.rng.choice(['him', 'her', 'them', 'us', 'me'])}.",
    lambda g: f"Tell {g.rng.choice(['them', 'him', 'her', 'us', 'me'])} about {g.thing()}.",
    lambda g: "The {} were very {} {}.".format(
        _noun(g.pick("people"), plural=True), g.pick("feelings"), g.pick("past_times")),
    lambda g: f"Which {_noun(g.pick('things'))} did {g.subject()} {_verb(g.pick('verbs_thing'), 0)}?",
    lambda g: "Come here and {} {}.".format(*g.transitive(0)),
    lambda g: f"{g.subject()} had a good time {g.loc()}.",
    lambda g: f"Turn off {g.thing()} when you go to bed.",
    lambda g: f"{g.subject()} stayed {g.loc()} until {g.pick('events')}.",
    lambda g: f"{g.subject()} knew that {g.subject()} {g.intransitive(1)} {g.pick('adverbs')}.",
    lambda g: f"The {g.adj()}{_noun(g.pick('animals'))} jumped onto {g.thing()}.",
    lambda g: "{} stopped {} {} {}.".format(g.subject(), *g.transitive(3), g.pick("past_times")),
    lambda g: "{} was {} {} {}.".format(g.subject(), *g.transitive(3), g.loc()),
    lambda g: f"It has been years since {g.subject()} {g.intransitive(1)} {g.loc()}.",
    lambda g: "Nothing could stop {} from {} {}.".format(g.person(), *g.transitive(3)),
    lambda g: f"Be careful with {g.thing()} {g.loc()}.",
    lambda g: f"The {g.pick('weather_nouns')} was {g.pick('adjectives')} {g.pick('times')}.",
    lambda g: "{} {} {}, and {} {} too.".format(
        g.subject(), g.intransitive(1), g.pick("adverbs"), g.subject(), g.intransitive(1)),
    lambda g: f"Do you know where {g.person()} {_verb(g.pick('verbs_thing'), 1)} {g.thing()}?",
    lambda g: f"There were {g.pick('numbers')} {_noun(g.pick('animals'), plural=True)} {g.loc()}.",
    lambda g: f"What did {g.subject()} {_verb(g.pick('verbs_food'), 0)} {g.pick('past_times')}?",
    lambda g: f"{g.subject()} has never {g.pick('adverbs')} been so {g.pick('feelings')}.",
    lambda g: f"Is {g.person()} still {g.intransitive(3)} {g.loc()}?",
]


def _finish(sentence: str) -> str:
    sentence = " ".join(sentence.split())
    return sentence[0].upper() + sentence[1:]


def training_sentences(n: int, seed: int = 0, max_attempts_factor: int = 20, wide: bool = False) -> list[str]:
    """``n`` distinct synthetic sentences, deterministic in ``seed``, none overlapping the evaluation set.

    ``wide``: some noun, adjective and verb slots draw from a ~8,600-word list (``_wide_words``) instead of
    the hand-made ~2,000-word one; the templates are the same.

    Raises ValueError if the grammar cannot produce ``n`` distinct sentences within n * max_attempts_factor
    draws (it can produce millions; this only guards against an impossible request).
    """
    rng = np.random.default_rng(seed)
    g = _Grammar(rng, wide=wide)
    out: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > max(1000, n * max_attempts_factor):
            raise ValueError(f"could only make {len(out)} distinct training sentences of {n} requested")
        sentence = _finish(_TEMPLATES[int(rng.integers(len(_TEMPLATES)))](g))
        key = normalize(sentence)
        if key in seen or overlaps_eval(sentence):
            continue
        seen.add(key)
        out.append(sentence)
    return out


def vocabulary(sentences: Iterable[str]) -> set[str]:
    return {w for s in sentences for w in normalize(s).split()}
