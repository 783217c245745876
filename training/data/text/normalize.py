"""Text normalisation to the character vocabulary: lowercase a-z, apostrophe, single spaces.

Numbers are written as words (num2words): years as years, ordinals as ordinals, money as
dollars and cents, decimals digit by digit after "point". What a TTS engine is given is this
normalised text, so the transcript is exactly what was spoken.
"""

from __future__ import annotations

import re
import unicodedata

_VALID = re.compile(r"^[a-z' ]+$")
_SYMBOLS = {
    "&": " and ",
    "%": " percent ",
    "+": " plus ",
    "=": " equals ",
    "@": " at ",
    "#": " number ",
    "\u2019": "'",
    "\u2018": "'",
    "`": "'",
}
_MONEY = re.compile(r"\$(\d+(?:,\d{3})*)(?:\.(\d{2}))?")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_DECIMAL = re.compile(r"\b(\d+)\.(\d+)\b")
_NUMBER = re.compile(r"\b\d+(?:,\d{3})*\b")


def number_words(n: int, *, to: str = "cardinal") -> str:
    from num2words import num2words

    return " ".join(re.sub(r"[-,]", " ", num2words(n, lang="en", to=to)).split())


def _money(m: re.Match[str]) -> str:
    dollars = int(m.group(1).replace(",", ""))
    out = f" {number_words(dollars)} dollar{'' if dollars == 1 else 's'} "
    if m.group(2) and int(m.group(2)):
        cents = int(m.group(2))
        out += f"and {number_words(cents)} cent{'' if cents == 1 else 's'} "
    return out


def _decimal(m: re.Match[str]) -> str:
    digits = " ".join(number_words(int(d)) for d in m.group(2))
    return f" {number_words(int(m.group(1)))} point {digits} "


def _number(m: re.Match[str]) -> str:
    raw = m.group(0)
    n = int(raw.replace(",", ""))
    if "," not in raw and len(raw) == 4 and 1100 <= n <= 2099:
        return f" {number_words(n, to='year')} "
    return f" {number_words(n)} "


def normalize_text(text: str) -> str | None:
    """Normalise `text`; None when nothing speakable is left."""
    s = unicodedata.normalize("NFKD", text)
    for sym, rep in _SYMBOLS.items():
        s = s.replace(sym, rep)
    s = s.encode("ascii", "ignore").decode("ascii")
    s = _MONEY.sub(_money, s)
    s = _ORDINAL.sub(lambda m: f" {number_words(int(m.group(1)), to='ordinal')} ", s)
    s = _DECIMAL.sub(_decimal, s)
    s = _NUMBER.sub(_number, s)
    s = s.lower()
    s = re.sub(r"[^a-z']+", " ", s)
    # keep apostrophes only inside words ("don't", "o'clock"), not as quotes
    s = re.sub(r"(?<![a-z])'+|'+(?![a-z])", " ", s)
    s = re.sub(r"\s+", " ", s).strip()
    if not s or not _VALID.match(s):
        return None
    return s


def is_normalized(text: str) -> bool:
    return bool(_VALID.match(text)) and "  " not in text and text == text.strip()
