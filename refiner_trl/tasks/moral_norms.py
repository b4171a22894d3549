"""Reading a moral norm as a judgment and a concept: `"It's rude to cut in line."` -> (-1, `"cut in line"`).

A norm's judgment is found by a small lexicon of the forms Moral Stories norms take: `it's <adjective> to ...`,
`<subject> should / shouldn't / must / mustn't ...`, `<subject> are expected / encouraged to ...`,
`don't / never ...` and `... is <adjective>`, with `not` / `never` reversing it. A norm in none of these forms has
an unknown judgment (`None`); its whole text is its concept. Concepts are compared by the overlap of their content
words (lower-cased, crudely stemmed, stop words dropped).
"""

from __future__ import annotations

import random
import re

POSITIVE = frozenset(
    "good right important kind nice polite expected fun okay ok best encouraged considerate fine great wise noble "
    "proper usual admirable acceptable responsible helpful thoughtful appropriate normal respectful generous "
    "courteous honorable healthy reasonable fair sweet caring loving brave honest commendable decent valued "
    "appreciated recommended necessary essential mature safe loyal supportive friendly compassionate moral ethical "
    "legal smart welcome allowed understandable accommodating scholarly sanitary accepting encouraging common "
    "productive sensible beneficial worthwhile customary courageous gracious hygienic clean tolerant".split()
)
NEGATIVE = frozenset(
    "wrong bad mean rude annoying greedy hurtful inappropriate controlling creepy disgusting irresponsible cruel "
    "awkward arrogant conceited juvenile unusual improper selfish unfair dangerous illegal lazy unkind disrespectful "
    "inconsiderate gross weird unacceptable irritating hypocritical childish petty dishonest shameful terrible "
    "harmful unhealthy risky careless reckless frowned immoral unethical insensitive impolite offensive cowardly "
    "stupid foolish unsafe abusive manipulative deceptive disgraceful thoughtless uncaring rash unwise sneaky vain "
    "wasteful embarrassing upsetting problematic tacky nasty horrible unprofessional disloyal unnecessary alarming "
    "homophobic racist sexist bigoted unsanitary unhygienic unproductive intolerant".split()
)
"""Judgment adjectives by polarity."""

FLIP_TO = {1: ("good", "right", "important", "kind"), -1: ("wrong", "bad", "rude", "mean")}
"""Adjectives a contradiction swaps in, by the polarity it should have."""

_MODIFIERS = r"(?:(?:always|usually|generally|very|really|considered|seen as|so|quite|often|pretty|extremely)\s+)*"
_IT = r"(?:it's|it is|its|that's|that is)"
_JUDGMENT_FIRST = re.compile(
    rf"^{_IT}\s+(not\s+|never\s+)?{_MODIFIERS}([a-z]+)\b\s*(?:(?:to|that|when|if|for)\b)?\s*(.*)$"
)
_MODAL = re.compile(
    r"^(?:[a-z']+\s+){0,2}?(should|must|ought to|need to|have to|shouldn't|mustn't|can't|cannot|shall)\s+"
    r"(not\s+|never\s+)?(.*)$"
)
_EXPECTED = re.compile(
    r"^(?:[a-z']+\s+){0,2}?(?:[a-z]*'re|are|is)\s+(not\s+|never\s+)?(?:expected|encouraged|supposed|obligated)\s+to\s+"
    r"(.*)$"
)
_IMPERATIVE = re.compile(r"^(don't|do not|never)\s+(.*)$")
_JUDGMENT_LAST = re.compile(rf"^(.{{1,400}}?)\s+(?:is|are)\s+(not\s+|never\s+)?{_MODIFIERS}([a-z]+)$")
_MAX_CHARS = 1000

STOP_WORDS = frozenset(
    "a an the to of in on at for with and or but your you yours their they them it its is are be being been "
    "that this those these when if so as by from one's someone something people person others other always "
    "usually not never should must just very really can can't do don't does upon about into out up over than "
    "his her he she him we our us my me i".split()
)


def normalize_norm(text: str) -> str:
    """Lower-case, straighten apostrophes, single spaces, no final punctuation.

    Args:
        text (`str`):
            A norm.
    """
    text = str(text)[:_MAX_CHARS].lower().replace("\u2019", "'").replace("`", "'")
    return " ".join(text.split()).rstrip(".!?; ")


def parse_norm(text: str) -> tuple[int | None, str]:
    """Split a norm into its judgment's polarity (`1`, `-1`, or `None` when unknown) and its concept.

    Args:
        text (`str`):
            The norm, e.g. `"You shouldn't lie to your friends."`.

    Example:

    ```python
    >>> parse_norm("It's wrong not to help others.")
    (1, 'help others')
    ```
    """
    norm = normalize_norm(text)
    polarity: int | None = None
    concept = norm
    if match := _JUDGMENT_FIRST.match(norm):
        negated, adjective, concept = match.groups()
        polarity = 1 if adjective in POSITIVE else -1 if adjective in NEGATIVE else None
        polarity = None if polarity is None else -polarity if negated else polarity
        concept = concept if polarity is not None else norm
    elif match := _MODAL.match(norm):
        modal, negated, concept = match.groups()
        polarity = -1 if modal in {"shouldn't", "mustn't", "can't", "cannot"} else 1
        polarity = -polarity if negated else polarity
    elif match := _EXPECTED.match(norm):
        negated, concept = match.groups()
        polarity = -1 if negated else 1
    elif match := _IMPERATIVE.match(norm):
        polarity, concept = -1, match.group(2)
    elif (match := _JUDGMENT_LAST.match(norm)) and match.group(3) in POSITIVE | NEGATIVE:
        concept, negated, adjective = match.groups()
        polarity = 1 if adjective in POSITIVE else -1
        polarity = -polarity if negated else polarity
    if polarity is not None and (inner := re.match(r"^(?:not|never)\s+(?:to\s+)?(.*)$", concept)):
        polarity, concept = -polarity, inner.group(1)
    return polarity, concept


def concept_words(concept: str) -> set[str]:
    """The content words of a concept, crudely stemmed (`helping` -> `help`, `friends` -> `friend`).

    Args:
        concept (`str`):
            The concept, as from [`parse_norm`].
    """
    words = set()
    for word in re.findall(r"[a-z']+", concept.lower()):
        word = word.removesuffix("'s").strip("'")
        if not word or word in STOP_WORDS:
            continue
        for suffix in ("ing", "ed", "es", "s"):
            if len(word) > len(suffix) + 3 and word.endswith(suffix) and not word.endswith("ss"):
                word = word[: -len(suffix)]
                break
        words.add(word)
    return words


def concept_overlap(first: str, second: str) -> float:
    """F1 of the content words of two concepts; 1.0 when both have none.

    Args:
        first (`str`):
            One concept.
        second (`str`):
            The other.
    """
    a, b = concept_words(first), concept_words(second)
    if not a and not b:
        return 1.0
    return 2 * len(a & b) / (len(a) + len(b))


def _antonyms(first: str, second: str) -> bool:
    for a, b in ((first, second), (second, first)):
        if any(a == prefix + b for prefix in ("un", "in", "im", "ir", "il", "dis", "non")):
            return True
        if a.endswith("less") and b.endswith("ful") and a[:-4] == b[:-3]:
            return True
    return False


def reverses_concept(first: str, second: str) -> bool:
    """Whether two concepts differ only in one word and its antonym by prefix or suffix (`careful` / `careless`).

    Args:
        first (`str`):
            One concept.
        second (`str`):
            The other.
    """
    a, b = concept_words(first), concept_words(second)
    only_a, only_b = a - b, b - a
    return len(only_a) == 1 and len(only_b) == 1 and _antonyms(next(iter(only_a)), next(iter(only_b)))


def flip_judgment(norm: str, rng: random.Random) -> str | None:
    """Reverse a norm's judgment and keep its concept, or `None` when its form is not one this can rewrite.

    `It's rude to X` -> `It's kind to X`, `You should X` -> `You shouldn't X`, `It's not ok to X` -> `It's ok to X`.

    Args:
        norm (`str`):
            The norm.
        rng (`random.Random`):
            Picks the adjective swapped in.
    """
    text = str(norm)[:_MAX_CHARS].replace("\u2019", "'")
    flags = re.IGNORECASE
    if match := re.match(rf"^({_IT}\s+)(not\s+|never\s+)?({_MODIFIERS})([a-z]+)\b", text, flags):
        lead, negated, modifiers, adjective = match.groups()
        if negated:
            return lead + modifiers + text[match.end(3) :]
        polarity = 1 if adjective.lower() in POSITIVE else -1 if adjective.lower() in NEGATIVE else None
        if polarity is None:
            return None
        return lead + modifiers + rng.choice(FLIP_TO[-polarity]) + text[match.end(4) :]
    if match := re.search(r"\b(should|must)\s+not\b|\b(shouldn't|mustn't)", text, flags):
        modal = (match.group(1) or match.group(2)[:-3]).lower()
        return text[: match.start()] + modal + text[match.end() :]
    if match := re.search(r"\b(should|must)\b", text, flags):
        return text[: match.start()] + match.group(1) + "n't" + text[match.end() :]
    if match := re.search(r"(\bare|\bis|'re)\s+(not\s+)?(expected|encouraged|supposed)\b", text, flags):
        verb, negated, word = match.groups()
        return text[: match.start()] + f"{verb} {'' if negated else 'not '}{word}" + text[match.end() :]
    return None
