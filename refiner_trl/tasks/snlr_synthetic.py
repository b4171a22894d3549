"""Templated sNLR examples: a fact, five rules and a chain of 2-4 inference steps, in the release's row format.

The vocabulary is the release's: entities of three categories, 28 attributes and synonyms that need an implicit
knowledge step (`intelligent is smart`). One or two rules fire, in a chain; the others never fire, because their
premises avoid every attribute the entity has or derives. One example in ten has no rule that fires, and its chain
is `#0: The argument is invalid!!` with the consequent `Nothing`, as in the release.
"""

from __future__ import annotations

import random
from typing import Any

CATEGORIES = {
    "plant": ("poppy", "rose", "tree", "dandelion", "sunflower", "tulip", "daisy"),
    "animal": ("cat", "dog", "cow", "mouse", "tiger", "hippo", "panda", "rabbit", "bear", "lion", "giraffe"),
    "person": ("Alice", "Bob", "Carol", "Dan", "Erin", "Frank"),
}
"""Category -> entities; a rule about a category needs the implicit step `entity is category`."""

ATTRIBUTES = (
    "slow", "bad", "weak", "big", "green", "round", "blue", "beautiful", "purple", "strong", "boring", "cold", "old",
    "soft", "fast", "sad", "smart", "clean", "good", "happy", "red", "young", "hot", "small", "scary",
)  # fmt: skip
SYNONYMS = {
    "intelligent": "smart", "clever": "smart", "wise": "smart", "huge": "big", "enormous": "big", "giant": "big",
    "tiny": "small", "little": "small", "ancient": "old", "antique": "old", "crimson": "red", "cobalt": "blue",
    "viridian": "green", "violet": "purple", "quick": "fast", "sluggish": "slow", "frail": "weak", "fragile": "weak",
    "muscular": "strong", "powerful": "strong", "circular": "round", "spherical": "round", "glad": "happy",
    "cheerful": "happy", "pretty": "beautiful", "kind": "good", "nice": "good", "evil": "bad", "wicked": "bad",
    "chill": "cold", "cool": "cold", "warm": "hot", "dull": "boring", "tidy": "clean",
}  # fmt: skip
"""Surface word -> attribute it implies."""


def _subject(noun: str, person: bool) -> tuple[str, str]:
    """How a rule names its subject: `("a plant", "the plant")`, `("an animal", ...)`, or a bare name."""
    if person:
        return noun, noun
    article = "an" if noun[0] in "aeiou" else "a"
    return f"{article} {noun}", f"the {noun}"


def _rule(subject: str, person: bool, premises: list[str], connective: str, conclusion: str) -> str:
    indefinite, definite = _subject(subject, person)
    return f"If {indefinite} is {f' {connective} '.join(premises)}, then {definite} is {conclusion}."


def generate_example(rng: random.Random) -> dict[str, Any]:
    """One example as a row of the release's format (`fact`, `rules`, `explanations`, `consequents`).

    Args:
        rng (`random.Random`):
            The source of randomness.
    """
    category = rng.choice(sorted(CATEGORIES))
    entity = rng.choice(CATEGORIES[category])
    person = category == "person"
    invalid = rng.random() < 0.1
    hops = rng.choice((1, 2))
    use_category = rng.random() < 0.5
    premise, first, second = rng.sample(ATTRIBUTES, 3)
    synonyms = [w for w in sorted(SYNONYMS) if SYNONYMS[w] == premise]
    use_synonym = bool(synonyms) and rng.random() < 0.5 and not (hops == 2 and use_category)
    word = rng.choice(synonyms) if use_synonym else premise
    others = [w for w in ATTRIBUTES + tuple(sorted(SYNONYMS)) if SYNONYMS.get(w, w) not in {premise, first, second}]
    other = rng.choice(others)
    held = {premise, first, second, SYNONYMS.get(other, other)}
    free = [a for a in ATTRIBUTES if a not in held]
    subject, named = (category, False) if use_category else (entity, person)
    rules, chain = [], []
    if not invalid:
        extra = [rng.choice(free)] if rng.random() < 0.5 else []
        rules.append(_rule(subject, named, [premise, *extra], "or", first))
        if hops == 2:
            rules.append(_rule(subject, named, [first], "or", second))
        chain += [f"{word} is {premise}"] if use_synonym else []
        chain += [f"{entity} is {category}"] if use_category else []
        chain += [f"{entity} is {premise}", f"{entity} is {first}"] + ([f"{entity} is {second}"] if hops == 2 else [])
    while len(rules) < 5:
        on_category = rng.random() < 0.5
        premises = rng.sample(free, rng.choice((1, 2)))
        connective = rng.choice(("and", "or"))
        rules.append(_rule(category if on_category else entity, person and not on_category, premises, connective,
                           rng.choice(ATTRIBUTES)))  # fmt: skip
    rng.shuffle(rules)
    facts = [word, other] if rng.random() < 0.5 else [other, word]
    the = "" if person else "The "
    return {
        "fact": f"{the}{entity} is {facts[0]} and {facts[1]}.",
        "rules": rules,
        "explanations": " ".join(f"#{i}: {s}" for i, s in enumerate(chain)) or "#0: The argument is invalid!!",
        "consequents": f"{the}{entity} is {chain[-1].partition(' is ')[2]}" if chain else "Nothing",
    }
