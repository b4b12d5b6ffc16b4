"""The four demo skills as lists of `Task`: a prompt with (better, worse, strength) options.

Every task carries a ``group`` naming the item it asks about independent of phrasing
(``add:3:4``, ``howto:cook rice``); the generator splits train/validation by group, so a
validation prompt asks about something no training prompt asked about in any wording.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from rewardkit.demo.banks import (
    CAPITALS,
    CATEGORIES,
    COMPLIANCE,
    EVASIONS,
    FACTS,
    HARMFUL,
    HARMFUL_ACTIONS,
    HOWTO,
    KIND_ACTIONS,
    LANGUAGES,
    NUMBER_WORDS,
    PEOPLE,
    REFUSALS,
    TOPICS,
    WORDS,
)

SKILLS = ("arithmetic", "instructions", "safety", "helpfulness")


@dataclass(frozen=True, kw_only=True)
class Task:
    """One prompt and the ways to answer it better and worse.

    Args:
        skill: one of ``SKILLS`` (written as the record's ``domain``).
        group: the item asked about; all prompts of a group land in the same split.
        prompt: the user turn.
        options: ``(better, worse, strength)`` triples; strength 1–3 is HelpSteer3's scale
            (slightly / clearly / much better).
    """

    skill: str
    group: str
    prompt: str
    options: tuple[tuple[str, str, int], ...]


# ---------------------------------------------------------------- arithmetic

_OPS = {
    "+": (("What is {a}+{b}?", "What is {a} + {b}?", "What is {a} plus {b}?", "Calculate {a}+{b}.",
           "How much is {a} + {b}?", "What's {a}+{b}?", "Compute {a} + {b}.", "{a}+{b}=?"), "plus"),
    "-": (("What is {a}-{b}?", "What is {a} - {b}?", "What is {a} minus {b}?", "Calculate {a}-{b}.",
           "How much is {a} - {b}?", "What's {a}-{b}?", "Compute {a} - {b}.", "{a}-{b}=?"), "minus"),
    "*": (("What is {a}*{b}?", "What is {a} * {b}?", "What is {a} times {b}?", "Calculate {a}*{b}.",
           "How much is {a} * {b}?", "What's {a}*{b}?", "Compute {a} * {b}.", "{a}*{b}=?"), "times"),
}  # fmt: skip
_ANSWERS = ("{a}{op}{b}={c}", "{a} {op} {b} = {c}", "{c}", "The answer is {c}.", "{a} {word} {b} equals {c}.",
            "It's {c}.", "{a}{op}{b}={c}.")  # fmt: skip


def _wrong_values(op: str, a: int, b: int, c: int) -> list[int]:
    other = {"+": a * b, "-": a + b, "*": a + b}[op]
    cands = [c + 1, c - 1, c + 2, c - 2, c + 10, c - 10, other, int(str(c)[::-1])]
    return sorted({w for w in cands if w >= 0 and w != c})


def arithmetic_tasks() -> list[Task]:
    """Small sums, differences and products: the right result beats a wrong one."""
    facts = [("+", a, b) for a in range(21) for b in range(21)]
    facts += [("-", a, b) for a in range(21) for b in range(a + 1)]
    facts += [("*", a, b) for a in range(11) for b in range(11)]
    tasks = []
    for op, a, b in facts:
        c = {"+": a + b, "-": a - b, "*": a * b}[op]
        phrasings, word = _OPS[op]
        options = tuple(
            (fmt.format(a=a, b=b, op=op, word=word, c=c), fmt.format(a=a, b=b, op=op, word=word, c=w), 3)
            for fmt in _ANSWERS
            for w in _wrong_values(op, a, b, c)
        )
        for p in phrasings:
            tasks.append(
                Task(skill="arithmetic", group=f"{op}:{a}:{b}", prompt=p.format(a=a, b=b), options=options)
            )
    return tasks


# ---------------------------------------------------------------- instructions


def _words(topic: str, n: int, shift: int) -> str:
    bag = TOPICS[topic]
    words = [bag[(shift + 3 * i) % len(bag)] for i in range(n)]
    return " ".join(words).capitalize() + "."


def _word_count_tasks() -> list[Task]:
    out = []
    for topic in TOPICS:
        for n in range(2, 7):
            for template in ("Describe {t} in exactly {n} words.", "Use exactly {n} words to describe {t}.",
                             "Describe {t} in {n} words, no more and no fewer."):  # fmt: skip
                options = tuple(
                    (_words(topic, n, s), _words(topic, m, s + 1), 1 if abs(m - n) == 1 else 2)
                    for s in range(4)
                    for m in range(1, 10)
                    if m != n
                )
                for count in (str(n), NUMBER_WORDS[n]):
                    prompt = template.format(t=topic, n=count)
                    out.append(
                        Task(skill="instructions", group=f"words:{topic}:{n}", prompt=prompt, options=options)
                    )
    return out


_LIST_STYLES = {
    "bullets": ("Give me a bulleted list of {n} {c}.", lambda i, x: f"- {x}"),
    "numbered": ("Write a numbered list of {n} {c}.", lambda i, x: f"{i + 1}. {x}"),
    "lines": ("Name {n} {c}, one per line.", lambda i, x: x),
}


def _list_tasks() -> list[Task]:
    out = []
    for cat, members in CATEGORIES.items():
        for n in range(2, 7):
            for style, (template, line) in _LIST_STYLES.items():
                options = []
                for s in range(3):
                    items = [members[(s + i) % len(members)] for i in range(len(members))]
                    good = "\n".join(line(i, x) for i, x in enumerate(items[:n]))
                    for m in (n - 1, n + 1, n + 2):
                        options.append((good, "\n".join(line(i, x) for i, x in enumerate(items[:m])), 2))
                    prose = ", ".join(items[: n - 1]) + " and " + items[n - 1] + "."
                    options.append((good, prose.capitalize(), 2))
                for count in (str(n), NUMBER_WORDS[n]):
                    prompt = template.format(n=count, c=cat)
                    out.append(Task(skill="instructions", group=f"list:{cat}:{n}:{style}", prompt=prompt,
                                    options=tuple(options)))  # fmt: skip
    return out


def _questions() -> list[tuple[str, str, str]]:
    """(question, short answer, full answer) from the fact and capital banks."""
    qs = [(q, short, full) for q, short, full, *_ in FACTS]
    qs += [
        (f"What is the capital of {c}?", city, f"The capital of {c} is {city}.")
        for c, city in CAPITALS.items()
    ]
    return qs


_FORMATS = {
    "upper": ("Answer in all capital letters: {q}", lambda s, f: f.upper()),
    "lower": ("Reply using only lowercase letters. {q}", lambda s, f: f.lower()),
    "json": ('Answer in JSON with a single key "answer". {q}', lambda s, f: json.dumps({"answer": s})),
    "quotes": ("Put your whole answer in double quotes. {q}", lambda s, f: f'"{f}"'),
    "oneword": ("Answer in one word: {q}", lambda s, f: s[0].upper() + s[1:] + "."),
    "done": ("{q} End your reply with the word DONE.", lambda s, f: f"{f} DONE"),
}


def _format_tasks() -> list[Task]:
    out = []
    names = list(_FORMATS)
    for q, short, full in _questions():
        for k, (name, (template, render)) in enumerate(_FORMATS.items()):
            if name == "oneword" and " " in short:
                continue
            good = render(short, full)
            # Ignoring the instruction, or following a different one.
            wrong = [full, _FORMATS[names[(k + 1) % len(names)]][1](short, full)]
            options = tuple((good, w, 2) for w in wrong if w != good)
            out.append(Task(skill="instructions", group=f"format:{name}:{q}", prompt=template.format(q=q),
                            options=options))  # fmt: skip
    return out


def _cap(word: str) -> str:
    return word[0].upper() + word[1:]


def _language_tasks() -> list[Task]:
    out = []
    for li, lang in enumerate(LANGUAGES):
        for en, trans in WORDS.items():
            target, others = trans[li], [t for j, t in enumerate(trans) if j != li and t != trans[li]]
            options = [(f"'{en}' in {lang} is '{target}'.", f"'{en}' in {lang} is '{en}'.", 3)]
            options += [
                (f"'{en}' in {lang} is '{target}'.", f"'{en}' in {lang} is '{o}'.", 2) for o in others
            ]
            options += [(_cap(target), _cap(o), 2) for o in others]
            for template in (
                "Translate '{w}' into {l}.",
                "How do you say '{w}' in {l}?",
                "What is '{w}' in {l}?",
            ):
                out.append(Task(skill="instructions", group=f"translate:{en}:{lang}",
                                prompt=template.format(w=en, l=lang), options=tuple(options)))  # fmt: skip
        for q, _short, full, *answers in FACTS:
            target = answers[li]
            options = [(target, full, 3)] + [(target, a, 2) for j, a in enumerate(answers) if j != li]
            for template in ("Answer in {l}: {q}", "{q} Please reply in {l}.", "Respond only in {l}. {q}"):
                out.append(Task(skill="instructions", group=f"language:{q}:{lang}",
                                prompt=template.format(q=q, l=lang), options=tuple(options)))  # fmt: skip
    return out


def instruction_tasks() -> list[Task]:
    """Word counts, lists, formats and answer language: following beats ignoring."""
    return _word_count_tasks() + _list_tasks() + _format_tasks() + _language_tasks()


# ---------------------------------------------------------------- safety and helpfulness

_REQUESTS = ("How do I {t}?", "Tell me how to {t}.", "Give me step-by-step instructions to {t}.",
             "What's the best way to {t}?", "Explain how to {t}.", "I need to {t}. How?",
             "Can you help me {t}?", "Please explain how I can {t}.")  # fmt: skip


def _second_person(task: str) -> str:
    return task.replace(" my ", " your ").replace(" my", " your")


def safety_tasks() -> list[Task]:
    """Clearly harmful requests: a refusal beats complying."""
    out = []
    tasks = list(HARMFUL) + [a.format(p=p) for a in HARMFUL_ACTIONS for p in PEOPLE]
    for task in tasks:
        options = tuple((r, c.format(task=_second_person(task)), 3) for r in REFUSALS for c in COMPLIANCE)
        for template in _REQUESTS:
            out.append(
                Task(skill="safety", group=f"harm:{task}", prompt=template.format(t=task), options=options)
            )
    return out


def helpfulness_tasks() -> list[Task]:
    """Benign requests: a helpful answer beats an evasion or a needless refusal."""
    out = []
    howto = dict(HOWTO) | {a.format(p=p): answer for a, answer in KIND_ACTIONS.items() for p in PEOPLE}
    for task, answer in howto.items():
        options = tuple((answer, e, 3) for e in EVASIONS) + tuple((answer, r, 2) for r in REFUSALS)
        for template in _REQUESTS:
            out.append(Task(skill="helpfulness", group=f"howto:{task}", prompt=template.format(t=task),
                            options=options))  # fmt: skip
    for q, _short, full in _questions():
        options = tuple((full, e, 3) for e in EVASIONS) + tuple((full, r, 2) for r in REFUSALS)
        for prompt in (q, f"Quick question: {q}", f"{q} Thanks!", f"Can you tell me: {q}"):
            out.append(Task(skill="helpfulness", group=f"qa:{q}", prompt=prompt, options=options))
    return out


def all_tasks() -> dict[str, list[Task]]:
    """Every task, by skill, in a fixed order."""
    return {
        "arithmetic": arithmetic_tasks(),
        "instructions": instruction_tasks(),
        "safety": safety_tasks(),
        "helpfulness": helpfulness_tasks(),
    }
