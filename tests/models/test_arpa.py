"""The ARPA reader: backoff arithmetic on a hand-written file and clear errors for bad ones."""

from __future__ import annotations

import math

import pytest

from models.lm.arpa import ArpaError, ArpaLM

ARPA = """\\data\\
ngram 1=4
ngram 2=2

\\1-grams:
-1.0\t</s>
-99\t<s>\t-0.5
-0.5\ta\t-0.3
-0.7\tb\t-0.2

\\2-grams:
-0.1\t<s> a
-0.4\ta b

\\end\\
"""


def test_backoff_scoring_by_hand(tmp_path) -> None:
    path = tmp_path / "tiny.arpa"
    path.write_text(ARPA)
    lm = ArpaLM.load(path)
    ln10 = math.log(10)
    assert lm.logprob(("<s>",), "a") == pytest.approx(-0.1 * ln10)
    assert lm.logprob(("a",), "b") == pytest.approx(-0.4 * ln10)
    assert lm.logprob(("b",), "a") == pytest.approx((-0.2 - 0.5) * ln10)  # backoff(b) * p(a)
    assert lm.logprob(("a",), "</s>") == pytest.approx((-0.3 - 1.0) * ln10)
    assert lm.vocab == {"a", "b"}
    assert lm.prefixes == {"a", "b"}
    assert lm.logprob(("a",), "zz") < lm.logprob(("a",), "b") - 5  # no <unk>: a low floor


@pytest.mark.parametrize("text, message", [
    ("hello", "no \\\\1-grams"),
    (ARPA.replace("ngram 2=2", "ngram 2=3"), "ngram 2=3, found 2"),
    (ARPA.replace("-0.4\ta b", "x\ta b"), "not a number"),
    (ARPA.replace("-0.4\ta b", "-0.4\ta"), "2-gram line"),
])
def test_bad_files_name_the_problem(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "bad.arpa"
    path.write_text(text)
    with pytest.raises(ArpaError, match=message):
        ArpaLM.load(path)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ArpaError, match="not found"):
        ArpaLM.load(tmp_path / "nope.arpa")
