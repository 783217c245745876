"""Training the neural LMs of models/lm/neural.py (`chorus lm train --type lstm|tcnlm`;
`--units char` for a character LSTM, the LM cold fusion reads).

Text comes as documents (lists of sentences): every sentence of the corpus's train-split text
pool is a document of its own; a dialogue of `chorus data dialogues` (train split) is one
document, its turns the sentences; so TCNLM's topic model sees a sentence's preceding turns.
Each example is (context = the earlier sentences' words of its document, at most
MAX_CONTEXT, sentence). The vocabulary is every word seen at least `min_count` times (at most
`max_vocab`, the rest <unk>); the topic model's vocabulary skips the `skip_frequent` most
frequent words (stop words and template scaffolding, as topic models drop stop words; at most
a fifth of the vocabulary).
Training is budgeted in wall-clock minutes (Adam, gradient clipping, length-bucketed batches),
loss = LM cross-entropy + the topic model's ELBO, both summed and divided by the tokens.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.lm.neural import BOS, EOS, UNK, NeuralLm, NeuralLmConfig
from models.tokenizer import DEFAULT_SYMBOLS

MAX_CONTEXT = 200  # words of preceding context the topic model sees


@dataclass(frozen=True)
class NeuralTrainConfig:
    type: str = "lstm"
    units: str = "word"  # word | char (the fixed character alphabet: cold fusion's LM)
    embed: int = 256
    hidden: int = 256
    dropout: float = 0.1
    topics: int = 16
    factor: int = 128
    bow_size: int = 2000
    skip_frequent: int = 100
    ntm_hidden: int = 256
    min_count: int = 2
    max_vocab: int = 20000
    batch: int = 64
    lr: float = 2e-3
    minutes: float = 10.0
    max_steps: int = 0  # > 0: stop after this many steps (tests)
    kl_anneal_steps: int = 0  # tcnlm: the KL weight ramps 0 -> 1 over these steps (0: always 1)
    seed: int = 0
    threads: int = 1


Example = tuple[list[str], list[str]]  # (preceding context words, sentence words)


def examples(documents: Iterable[list[list[str]]]) -> list[Example]:
    out = []
    for doc in documents:
        ctx: list[str] = []
        for sent in doc:
            if sent:
                out.append((ctx[-MAX_CONTEXT:], sent))
                ctx = ctx + sent
    return out


def dialogue_documents(path: Path, split: str = "train") -> list[list[list[str]]]:
    """The turns of each dialogue of `chorus data dialogues`'s dialogues.jsonl in `split`."""
    docs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        if d["split"] == split:
            docs.append([turn["text"].split() for turn in d["turns"]])
    return docs


def build_config(cfg: NeuralTrainConfig, train: list[Example]) -> NeuralLmConfig:
    counts = Counter(w for _, s in train for w in s)
    ranked = [w for w, c in counts.most_common() if c >= cfg.min_count]
    if cfg.units == "char":  # fixed, so any two character LMs of one size can be swapped
        vocab = [UNK, BOS, EOS, *DEFAULT_SYMBOLS[1:]]
    else:
        vocab = [UNK, BOS, EOS] + ranked[: cfg.max_vocab]
    skip = min(cfg.skip_frequent, len(ranked) // 5)  # a tiny text keeps most of its words
    bow = ranked[skip : skip + cfg.bow_size] if cfg.type == "tcnlm" else []
    return NeuralLmConfig(type=cfg.type, vocab=vocab, embed=cfg.embed, hidden=cfg.hidden,
                          dropout=cfg.dropout, topics=cfg.topics if cfg.type == "tcnlm" else 0,
                          factor=cfg.factor if cfg.type == "tcnlm" else 0, bow_vocab=bow,
                          ntm_hidden=cfg.ntm_hidden, units=cfg.units)


def _batches(train: list[Example], size: int, rng: random.Random) -> list[list[Example]]:
    order = sorted(train, key=lambda e: (len(e[1]), rng.random()))  # similar lengths together
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    rng.shuffle(batches)
    return batches


def loss_of(model: NeuralLm, batch: list[Example], sample: bool = True,
            kl_weight: float = 1.0) -> tuple[torch.Tensor, int]:
    """(LM cross-entropy + topic-model ELBO, summed over the batch) and its token count."""
    x, y = model.tensors([s for _, s in batch])  # (B, T) each, y -100 where padded
    t, ntm_loss = model.topics_of([c for c, _ in batch], len(batch), sample=sample,
                                  kl_weight=kl_weight)
    lp, _ = model(x, t)  # (B, T, V)
    nll = torch.nn.functional.nll_loss(lp.reshape(-1, lp.shape[-1]), y.reshape(-1),
                                       ignore_index=-100, reduction="sum")
    return nll + ntm_loss.sum(), sum(len(model.tokens_of(s)) + 1 for _, s in batch)


def perplexity_of(logprobs: list[float], sentences: list[list[str]],
                  vocab: Any) -> dict[str, float]:
    """Perplexity of sentences (+ </s> each) from their natural-log probabilities, and the
    share of tokens outside `vocab` (any LM: n-gram or neural)."""
    tokens = sum(len(s) + 1 for s in sentences)
    oov = sum(w not in vocab for s in sentences for w in s)
    return {"perplexity": round(math.exp(-sum(logprobs) / tokens), 1), "tokens": tokens,
            "oov_rate": round(oov / tokens, 4)}


def perplexity(model: NeuralLm, data: list[Example]) -> dict[str, float]:
    """Perplexity over the sentences (+ </s>) given their contexts, and the OOV rate."""
    sentences = [s for _, s in data]
    return perplexity_of(model.sentence_logprobs(sentences, [c for c, _ in data]),
                         [model.tokens_of(s) for s in sentences], model.index)


def train(cfg: NeuralTrainConfig, train_set: list[Example], dev: list[Example] | None,
          out: Path, progress: bool = True) -> dict[str, Any]:
    from tqdm import tqdm

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    model = NeuralLm(build_config(cfg, train_set))
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    budget = cfg.minutes * 60
    t0 = time.monotonic()
    step, epoch, seen = 0, 0, 0
    bar = tqdm(total=round(budget), unit="s", disable=not progress, desc=f"lm {cfg.type}")
    done = False
    while not done:
        for batch in _batches(train_set, cfg.batch, rng):
            model.train()
            frac = min(1.0, (time.monotonic() - t0) / budget) if budget else 0.0
            for g in opt.param_groups:  # cosine decay over the wall-clock budget
                g["lr"] = cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
            kl = min(1.0, step / cfg.kl_anneal_steps) if cfg.kl_anneal_steps else 1.0
            loss, tokens = loss_of(model, batch, kl_weight=kl)
            opt.zero_grad()
            (loss / tokens).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step, seen = step + 1, seen + tokens
            bar.n = min(round(time.monotonic() - t0), round(budget))
            bar.set_postfix(step=step, loss=f"{float(loss.detach()) / tokens:.3f}", refresh=False)
            bar.refresh()
            if (cfg.max_steps and step >= cfg.max_steps) or time.monotonic() - t0 >= budget:
                done = True
                break
        epoch += 1
    bar.close()
    model.save(out)
    summary = {"type": cfg.type, "params": params, "steps": step, "epochs_started": epoch,
               "tokens_seen": seen, "train_examples": len(train_set),
               "vocab": len(model.cfg.vocab), "minutes": round((time.monotonic() - t0) / 60, 2),
               "config": cfg.__dict__}
    if dev:
        summary["dev"] = perplexity(model, dev)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


@torch.no_grad()
def topic_report(model: NeuralLm, top: int = 8, sample_words: int = 12,
                 seed: int = 0) -> list[dict[str, Any]]:
    """Per topic: its top words (the topic model's decoder) and a sentence sampled from the
    LM conditioned on that topic alone (t = one-hot)."""
    if model.cfg.type != "tcnlm":
        return []
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    out = []
    k = model.cfg.topics
    for i in range(k):
        t = torch.zeros(1, k)
        t[0, i] = 1.0
        logits = model.ntm.beta(t)[0]
        words = [model.cfg.bow_vocab[j] for j in logits.topk(min(top, logits.numel())).indices.tolist()]
        ids, state, x = [], None, torch.tensor([[1]])
        for _ in range(sample_words):
            lp, state = model(x, t, state)
            nxt = int(torch.multinomial(lp[0, -1].exp(), 1, generator=gen))
            if nxt == 2:
                break
            ids.append(nxt)
            x = torch.tensor([[nxt]])
        out.append({"topic": i, "top_words": words,
                    "sample": " ".join(model.cfg.vocab[j] for j in ids)})
    return out
