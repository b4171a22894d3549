"""Templated moral stories in the Hub's column layout: situation, intention, immoral action, norm, moral action.

Each scenario has a moral concept and an immoral one; the norm either praises the first or condemns the second, in
one of several phrasings, so the same story can carry differently worded norms with the same meaning.
"""

from __future__ import annotations

import random
from typing import Any

NAMES = (
    ("Maya", "she", "her"), ("Jon", "he", "his"), ("Priya", "she", "her"), ("Leo", "he", "his"),
    ("Hana", "she", "her"), ("Sam", "he", "his"), ("Rosa", "she", "her"), ("Ben", "he", "his"),
    ("Aisha", "she", "her"), ("Marco", "he", "his"),
)  # fmt: skip

SCENARIOS = (
    # situation, intention, moral action, immoral action, moral concept, immoral concept
    ("{n} finds a wallet full of cash on the sidewalk.", "{n} wants to buy a new phone.",
     "{n} hands the wallet in at the police station.", "{n} keeps the cash and throws the wallet away.",
     "return lost property to its owner", "keep money that you find"),
    ("{n} is waiting in a long line at the bakery.", "{n} wants to get bread quickly.",
     "{n} waits patiently for {p} turn.", "{n} pushes to the front of the line.",
     "wait for your turn in line", "cut in line"),
    ("{n}'s friend asks {o} to keep a secret.", "{n} wants to entertain the people at a party.",
     "{n} tells funny stories about {p} own holidays.", "{n} tells everyone the friend's secret.",
     "keep the secrets friends trust you with", "reveal a friend's secret"),
    ("{n} borrowed a drill from a neighbour last month.", "{n} wants to keep the drill for another project.",
     "{n} returns the drill and asks to borrow it again later.", "{n} pretends the drill was never borrowed.",
     "give back what you borrow", "keep things you borrowed"),
    ("{n} sees an elderly man struggling with heavy bags.", "{n} wants to get home before the rain.",
     "{n} carries the bags to the man's door first.", "{n} walks past the man without a word.",
     "help elderly people who are struggling", "ignore people who need help"),
    ("{n} is taking a difficult exam at school.", "{n} wants to get a good grade.",
     "{n} answers the questions {s} studied for.", "{n} copies the answers of the student in front.",
     "do your own work on an exam", "cheat on a test"),
    ("{n} accidentally scratches a parked car.", "{n} wants to avoid paying for the damage.",
     "{n} leaves a note with {p} phone number.", "{n} drives away quickly.",
     "take responsibility for damage you cause", "flee after damaging someone's property"),
    ("{n}'s younger brother wants to play a video game.", "{n} wants to finish {p} own game.",
     "{n} plays one more round and then hands over the controller.", "{n} locks {p} brother out of the room.",
     "share with your siblings", "be selfish toward your siblings"),
    ("{n} is at a quiet library with friends.", "{n} wants to talk about weekend plans.",
     "{n} invites the friends outside to talk.", "{n} chats loudly at the study table.",
     "keep your voice down in a library", "make loud noise in a library"),
    ("{n} has promised to help a friend move house.", "{n} wants to sleep in on Saturday.",
     "{n} sets an alarm and arrives on time to help.", "{n} ignores the friend's calls all day.",
     "keep your promises", "break a promise to a friend"),
    ("{n} finishes a picnic in the park.", "{n} wants to leave quickly.",
     "{n} packs the rubbish into a bag and takes it along.", "{n} leaves the rubbish on the grass.",
     "clean up after yourself in public places", "litter in a park"),
    ("{n}'s coworker made a mistake in a report.", "{n} wants to impress the manager.",
     "{n} quietly points out the mistake to the coworker.", "{n} mocks the coworker in front of the team.",
     "treat your coworkers with respect", "humiliate a coworker"),
    ("{n} is given too much change by a cashier.", "{n} wants to save money.",
     "{n} gives the extra change back to the cashier.", "{n} pockets the extra change.",
     "be honest about money", "take advantage of someone's mistake"),
    ("{n}'s dog needs a walk in the evening.", "{n} wants to watch a movie.",
     "{n} walks the dog and watches the movie afterwards.", "{n} leaves the dog shut inside all night.",
     "take good care of your pets", "neglect your pets"),
    ("{n} is invited to a friend's birthday dinner.", "{n} wants to try a new restaurant instead.",
     "{n} goes to the dinner and suggests the restaurant for next time.", "{n} skips the dinner without a word.",
     "show up for your friends", "stand up your friends"),
    ("{n} sees a classmate being teased at lunch.", "{n} wants to stay popular.",
     "{n} sits with the classmate and tells the others to stop.", "{n} joins in the teasing.",
     "stand up for people who are bullied", "bully a classmate"),
)  # fmt: skip

POSITIVE_FORMS = ("It's good to {c}.", "You should {c}.", "It's important to {c}.", "It's kind to {c}.")
NEGATIVE_FORMS = ("It's wrong to {c}.", "You shouldn't {c}.", "It's rude to {c}.", "It's bad to {c}.")


def scenario_norms() -> list[str]:
    """A norm of each polarity for every scenario: the pool that wrong concepts are drawn from without data."""
    return [POSITIVE_FORMS[0].format(c=s[4]) for s in SCENARIOS] + [
        NEGATIVE_FORMS[0].format(c=s[5]) for s in SCENARIOS
    ]


def generate_story(rng: random.Random) -> dict[str, Any]:
    """One story as a row of the Hub's layout (`situation`, `intention`, `immoral_action`, `norm`, `moral_action`).

    Args:
        rng (`random.Random`):
            The source of randomness.
    """
    name, pronoun, possessive = rng.choice(NAMES)
    situation, intention, moral, immoral, good, bad = rng.choice(SCENARIOS)
    objective = "her" if pronoun == "she" else "him"

    def fill(text: str) -> str:
        return text.format(n=name, s=pronoun, p=possessive, o=objective)

    if rng.random() < 0.5:
        norm = rng.choice(POSITIVE_FORMS).format(c=good)
    else:
        norm = rng.choice(NEGATIVE_FORMS).format(c=bad)
    return {
        "situation": fill(situation),
        "intention": fill(intention),
        "immoral_action": fill(immoral),
        "norm": norm,
        "moral_action": fill(moral),
    }
