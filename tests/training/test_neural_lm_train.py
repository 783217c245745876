"""Training the neural LMs (`chorus lm train`): perplexity falls on held-out dialogue turns,
and TCNLM writes its topics; on a small generated dialogue set (seconds)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from models.lm.neural import load

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("kind", ["lstm", "tcnlm"])
def test_training_lowers_dev_perplexity(dialogues, tmp_path, kind) -> None:
    """Dev turns (dialogues of the dev split, never trained on) with their contexts: the
    perplexity after 150 steps is under half of the untrained model's (1 step)."""
    ppl = {}
    for steps in (1, 150):
        out = tmp_path / f"{kind}{steps}"
        subprocess.run([sys.executable, "-m", "clients.cli", "lm", "train", "--type", kind,
                        "--out", str(out), "--no-corpus-text", "--dialogues", str(dialogues),
                        "--dev", str(dialogues), "--max-steps", str(steps), "--minutes", "5",
                        "--embed", "32", "--hidden", "32", "--topics", "4", "--factor", "16",
                        "--bow-size", "300", "--no-progress"],
                       cwd=ROOT, check=True, capture_output=True, timeout=300)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["steps"] == steps and summary["dev"]["tokens"] > 100
        ppl[steps] = summary["dev"]["perplexity"]
    assert ppl[150] < 0.5 * ppl[1], ppl
    model = load(tmp_path / f"{kind}150")
    assert model.cfg.type == kind
    if kind == "tcnlm":
        topics = json.loads((tmp_path / "tcnlm150/topics.json").read_text())
        assert len(topics) == 4 and all(len(t["top_words"]) == 8 for t in topics)
        assert all(w in model.cfg.bow_vocab for t in topics for w in t["top_words"])


def test_ppl_command_scores_a_manifest_with_a_neural_lm(dialogues, tmp_path) -> None:
    """`chorus lm ppl --lm DIR` (a neural LM) gives per-domain perplexity and OOV of a
    manifest's transcripts, as it does for an ARPA file."""
    import gzip

    out = tmp_path / "lm"
    subprocess.run([sys.executable, "-m", "clients.cli", "lm", "train", "--type", "lstm",
                    "--out", str(out), "--no-corpus-text", "--dialogues", str(dialogues),
                    "--max-steps", "20", "--embed", "16", "--hidden", "16", "--no-progress"],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    manifest = tmp_path / "m.jsonl.gz"
    with gzip.open(manifest, "wt") as f:
        for text, domain in (("what is the meaning of the word", "dialogue"),
                             ("zzyzx qwv", "junk")):
            f.write(json.dumps({"supervisions": [{"text": text, "custom": {"domain": domain}}]})
                    + "\n")
    subprocess.run([sys.executable, "-m", "clients.cli", "lm", "ppl", "--lm", str(out),
                    "--manifest", str(manifest), "--json", str(tmp_path / "p.json")],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    got = json.loads((tmp_path / "p.json").read_text())[str(manifest)]
    assert got["all"]["tokens"] == 7 + 1 + 2 + 1
    assert got["junk"]["oov_rate"] == pytest.approx(2 / 3, abs=1e-3)
    import math

    lp = load(out).sentence_logprobs([["what", "is", "the", "meaning", "of", "the", "word"]])[0]
    assert got["dialogue"]["perplexity"] == pytest.approx(math.exp(-lp / 8), abs=0.06)
