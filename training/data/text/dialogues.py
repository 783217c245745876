"""MIND-style conversational text (Akter et al. 2024), made without a language model.

MIND rewrites raw text into conversations in which the speakers know different amounts
(teacher and student, layman and expert, two students, a debate), because the knowledge gap
makes the dialogue explain and restate what the raw text only states. No LLM with offline
weights is installed here, so the conversations are built by rules from structured sources,
and every fact a turn states comes from its source:

- WordNet (Debian `wordnet-base`): a word, its gloss and its usage examples -> teacher and
  student (what does it mean, an example, the student restates it, the teacher confirms);
- spoken arithmetic, generated: layman and expert (a question, the answer, how it is worked
  out, a check the other way round);
- fortunes (Debian `fortunes`): two students or a debate over a saying (one quotes it, the
  other asks, doubts or agrees, the first restates it).

Each dialogue carries a source key; its split is the stable text hash of that key
(training.data.synth.split.text_split), so a test dialogue's source never reaches training.
Turns are normalised transcripts (training.data.text.normalize), ready for an LM or TTS.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from training.data.synth.split import text_split
from training.data.text.normalize import normalize_text
from training.data.text.sources import MAX_WORDS, WORDNET_DIR, fortune_sentences, wordnet_synsets

STYLES = ("teacher_student", "layman_expert", "two_students", "debate")


@dataclass(frozen=True)
class Entry:
    word: str  # lemma, spaces for underscores
    pos: str
    gloss: str
    examples: tuple[str, ...]


@dataclass
class Dialogue:
    id: str
    style: str
    source: str  # what the split is hashed from (the lemma, the sum, the saying)
    split: str
    turns: list[tuple[str, str]] = field(default_factory=list)  # (speaker "A" | "B", text)

    def to_dict(self) -> dict:
        return {"id": self.id, "style": self.style, "source": self.source, "split": self.split,
                "turns": [{"speaker": s, "text": t} for s, t in self.turns]}


def wordnet_entries(root: Path = WORDNET_DIR) -> list[Entry]:
    """Entries with a short gloss and at least one usage example that uses the word."""
    out: list[Entry] = []
    for word, pos, gloss, examples in wordnet_synsets(root):
        if not re.fullmatch(r"[a-z][a-z ]{1,30}", word):
            continue
        uses = tuple(e for e in examples if word in e.lower())
        if gloss and uses and len(gloss.split()) <= 16:
            out.append(Entry(word, pos, gloss, uses))
    return out


def _say(text: str) -> str | None:
    norm = normalize_text(text)
    return norm if norm and len(norm.split()) <= MAX_WORDS + 8 else None


def _turns(pairs: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
    out = []
    for speaker, text in pairs:
        norm = _say(text)
        if norm is None:
            return None
        out.append((speaker, norm))
    return out


def teacher_student(e: Entry, rng: random.Random) -> list[tuple[str, str]] | None:
    ask = rng.choice([f"what does {e.word} mean", f"what is the meaning of the word {e.word}",
                      f"i keep hearing the word {e.word}, what does it mean"])
    art = "to " if e.pos == "verb" else ""
    gloss = f"to {e.gloss}" if e.pos == "verb" and not e.gloss.startswith("to ") else e.gloss
    return _turns([
        ("A", ask),
        ("B", f"{art}{e.word} means {gloss}"),
        ("A", rng.choice(["can you use it in a sentence", "can you give me an example",
                          "how would i use it"])),
        ("B", f"sure, for example, {rng.choice(e.examples)}"),
        ("A", f"so {art}{e.word} means {gloss}, is that right"),
        ("B", rng.choice(["yes, exactly", "that is right", "yes, you have got it"])),
    ])


def layman_expert(rng: random.Random) -> tuple[str, list[tuple[str, str]] | None]:
    a, b = rng.randint(2, 19), rng.randint(2, 12)
    op = rng.choice(["plus", "times", "minus"])
    if op == "plus":
        r, how = a + b, f"start at {a} and count {b} more"
        check = f"and {b} plus {a} is also {r}"
    elif op == "times":
        r, how = a * b, f"add {a} to itself {b} times"
        check = f"and {b} times {a} is also {r}"
    else:
        a, b = max(a, b), min(a, b)
        r, how = a - b, f"take {b} away from {a}"
        check = f"and {r} plus {b} gives {a} again"
    source = f"{a} {op} {b}"
    return source, _turns([
        ("A", rng.choice([f"how much is {a} {op} {b}", f"what do you get for {a} {op} {b}"])),
        ("B", f"{a} {op} {b} is {r}"),
        ("A", rng.choice(["how do you work that out", "how did you get that"])),
        ("B", f"you {how}, which gives {r}"),
        ("A", f"i see, {check}"),
        ("B", rng.choice(["yes, that is a good way to check it", "right, that checks it"])),
    ])


def two_students(saying: str, rng: random.Random) -> list[tuple[str, str]] | None:
    return _turns([
        ("A", rng.choice([f"i read somewhere that {saying}", f"my teacher said {saying}"])),
        ("B", rng.choice(["what do you think that means", "do you think that is true"])),
        ("A", rng.choice(["i am not sure, i think it is about how people act",
                          "i think it is a kind of advice"])),
        ("B", f"so the idea is that {saying}"),
        ("A", rng.choice(["yes, something like that", "i think so"])),
    ])


def debate(saying: str, rng: random.Random) -> list[tuple[str, str]] | None:
    return _turns([
        ("A", saying),
        ("B", rng.choice(["i am not so sure about that", "i do not think that is always true"])),
        ("A", "why not"),
        ("B", rng.choice(["because it depends on the situation",
                          "because there are plenty of counter examples"])),
        ("A", f"maybe, but i still think {saying}"),
        ("B", rng.choice(["well, we will have to agree to disagree", "fair enough"])),
    ])


def generate(count: int, seed: int = 0, *, entries: list[Entry] | None = None,
             sayings: list[str] | None = None) -> Iterator[Dialogue]:
    """`count` dialogues, styles in turn; deterministic for a seed and the same sources."""
    rng = random.Random(seed)
    entries = wordnet_entries() if entries is None else entries
    sayings = fortune_sentences() if sayings is None else sayings
    styles = [s for s in STYLES if s != "teacher_student" or entries]
    styles = [s for s in styles if s not in ("two_students", "debate") or sayings]
    made = attempts = 0
    while made < count:
        attempts += 1
        if attempts > 20 * count + 100:
            raise RuntimeError(f"could not make {count} dialogues from the sources")
        style = styles[made % len(styles)]
        if style == "teacher_student":
            e = rng.choice(entries)
            source, turns = f"{e.word}: {e.gloss}", teacher_student(e, rng)
        elif style == "layman_expert":
            source, turns = layman_expert(rng)
        else:
            source = rng.choice(sayings)
            turns = (two_students if style == "two_students" else debate)(source, rng)
        if turns is None:
            continue
        yield Dialogue(f"dlg-{seed}-{made:06d}", style, source, text_split(source), turns)
        made += 1
