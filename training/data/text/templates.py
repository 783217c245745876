"""Template sentences for the domains a voice assistant hears: numbers, times, dates, money,
addresses, spelled letters and device commands. Each generator returns (text, speak): the
normalised transcript and what the TTS engine is given (they differ only where an engine needs
a hint, e.g. "K, A, T" so that single letters are read as letter names).
"""

from __future__ import annotations

import calendar
import random
import re
import string
from collections.abc import Callable

from training.data.text.normalize import normalize_text, number_words

Generated = tuple[str, str]

_MONTHS = [m.lower() for m in calendar.month_name[1:]]
_DAYS = [d.lower() for d in calendar.day_name]
_STREETS = ["oak", "maple", "pine", "cedar", "elm", "washington", "lake", "hill", "park", "main",
            "church", "mill", "river", "sunset", "highland", "franklin", "jefferson", "spring"]
_STREET_TYPES = ["street", "avenue", "road", "lane", "drive", "boulevard", "court", "way", "place"]
_CITIES = ["springfield", "boston", "denver", "austin", "portland", "seattle", "chicago", "phoenix",
           "atlanta", "dallas", "houston", "madison", "richmond", "oxford", "cambridge", "leeds",
           "glasgow", "dublin", "toronto", "sydney", "london", "bristol", "york", "detroit"]
_NAMES = ["kate", "john", "maria", "david", "sarah", "peter", "linda", "james", "susan", "robert",
          "emma", "oliver", "sophia", "liam", "ava", "noah", "mia", "lucas", "grace", "henry"]
_ROOMS = ["kitchen", "bedroom", "living room", "bathroom", "office", "garage", "hallway", "porch"]
_DEVICES = ["lights", "lamp", "fan", "heater", "air conditioner", "television", "radio", "oven"]
_GENRES = ["jazz", "rock", "classical music", "the news", "some podcasts", "country", "blues"]
_ITEMS = ["milk", "eggs", "bread", "coffee", "apples", "rice", "butter", "cheese", "tomatoes"]


def _n(k: int) -> str:
    return number_words(k)


def numbers(rng: random.Random) -> Generated:
    k = rng.choice([rng.randint(0, 20), rng.randint(21, 999), rng.randint(1000, 999_999)])
    phone = " ".join(_n(int(d)) for d in f"{rng.randint(200, 999)}{rng.randint(0, 9999):04d}")
    text = rng.choice([
        f"the answer is {_n(k)}",
        f"please enter {_n(k)}",
        f"my number is {phone}",
        f"order {_n(k)} units",
        f"the code is {' '.join(_n(int(d)) for d in str(k))}",
        f"room {_n(rng.randint(1, 999))} on floor {_n(rng.randint(1, 40))}",
        f"it is the {number_words(rng.randint(1, 100), to='ordinal')} time",
    ])
    return text, text


def times(rng: random.Random) -> Generated:
    h, m = rng.randint(1, 12), rng.choice([0, 5, 10, 15, 20, 30, 40, 45, 50, rng.randint(1, 59)])
    ampm = rng.choice(["a m", "p m", "in the morning", "in the evening", ""])
    clock = f"{_n(h)} o'clock" if m == 0 else f"{_n(h)} {'oh ' if m < 10 else ''}{_n(m)}"
    phrase = rng.choice([clock, f"half past {_n(h)}", f"quarter to {_n(h)}", clock])
    text = rng.choice([
        f"set an alarm for {phrase} {ampm}",
        f"the meeting starts at {phrase} {ampm}",
        f"wake me up at {phrase} {ampm}",
        f"the train leaves at {phrase}",
        f"it is {phrase} {ampm}",
    ])
    speak = re.sub(r"\b([ap]) m\b", lambda x: f"{x.group(1).upper()}. M.", text)
    return " ".join(text.split()), " ".join(speak.split())


def dates(rng: random.Random) -> Generated:
    month, day = rng.choice(_MONTHS), number_words(rng.randint(1, 28), to="ordinal")
    year = number_words(rng.randint(1950, 2035), to="year")
    text = rng.choice([
        f"my birthday is on {month} {day}",
        f"the appointment is on {rng.choice(_DAYS)} {month} {day}",
        f"she was born on the {day} of {month} {year}",
        f"the deadline is {month} {day} {year}",
        f"remind me on {rng.choice(_DAYS)}",
    ])
    return normalize_text(text) or text, text


def money(rng: random.Random) -> Generated:
    raw = rng.choice([
        f"${rng.randint(1, 999)}.{rng.randint(0, 99):02d}",
        f"${rng.randint(1, 20000)}",
    ])
    text = normalize_text(rng.choice([
        f"the total is {raw}",
        f"transfer {raw} to savings",
        f"it costs {raw}",
        f"i paid {raw} for the {rng.choice(_ITEMS)}",
        f"your balance is {raw}",
    ]))
    assert text is not None
    return text, text


def addresses(rng: random.Random) -> Generated:
    num = rng.randint(1, 9999)
    spoken_num = (
        _n(num) if num < 100 or num % 100 == 0
        else f"{_n(num // 100)} {('oh ' + _n(num % 100)) if num % 100 < 10 else _n(num % 100)}"
    )
    street = f"{rng.choice(_STREETS)} {rng.choice(_STREET_TYPES)}"
    text = rng.choice([
        f"i live at {spoken_num} {street} {rng.choice(_CITIES)}",
        f"navigate to {spoken_num} {street}",
        f"the office is on {street} in {rng.choice(_CITIES)}",
        f"send it to {spoken_num} {street} apartment {_n(rng.randint(1, 60))}",
    ])
    return text, text


def spelled(rng: random.Random) -> Generated:
    name = rng.choice(_NAMES + [
        "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 6)))
    ])
    letters = list(name)
    intro = rng.choice(["spell", "my name is spelled", "the code is", "that is"])
    text = f"{intro} {' '.join(letters)}"
    speak = f"{intro} " + ", ".join(c.upper() for c in letters) + "."
    return text, speak


def commands(rng: random.Random) -> Generated:
    text = rng.choice([
        f"turn {rng.choice(['on', 'off'])} the {rng.choice(_ROOMS)} {rng.choice(_DEVICES)}",
        f"set a timer for {_n(rng.randint(1, 90))} minutes",
        f"call {rng.choice(_NAMES)}",
        f"play {rng.choice(_GENRES)}",
        f"what's the weather in {rng.choice(_CITIES)} {rng.choice(['today', 'tomorrow', ''])}",
        f"add {rng.choice(_ITEMS)} to my shopping list",
        f"set the temperature to {_n(rng.randint(60, 80))} degrees",
        f"volume {rng.choice(['up', 'down'])}",
        "stop the music",
        f"send a message to {rng.choice(_NAMES)} saying i'll be late",
        f"dim the {rng.choice(_ROOMS)} lights to {_n(rng.choice([10, 20, 30, 50, 75]))} percent",
        "open the garage door",
        "lock the front door",
    ])
    text = " ".join(text.split())
    return text, text


TEMPLATES: dict[str, Callable[[random.Random], Generated]] = {
    "numbers": numbers,
    "times": times,
    "dates": dates,
    "money": money,
    "addresses": addresses,
    "spelled": spelled,
    "commands": commands,
}
