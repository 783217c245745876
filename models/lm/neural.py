"""Word-level neural language models: an LSTM LM and TCNLM (Wang et al. 2018).

TCNLM, the topic-compositional neural LM: a neural topic model (a VAE over a bag of words, as
in Miao et al. 2017) infers topic proportions t (K,) from the *preceding* context of a sentence
(earlier sentences of its document or dialogue; in a server, the session's earlier finals), and
t mixes an ensemble of K topic-dependent LSTMs through the factorisation of every gate's weights

    W(t) = Wa . diag(Wb t) . Wc        (Wa: H x F, Wb: F x K, Wc: F x E; F the factor rank)

so the ensemble costs 3 small matrices per gate instead of K full ones. The topic model's
decoder, softmax(t . beta) with beta (K, V_bow), gives each topic's top words. Without context
t is the prior's (uniform), and TCNLM is one LSTM with mixed weights.

A saved LM is a directory: `lm.json` (config + vocabularies, JSON) and `lm.safetensors`
(weights only), so loading executes no code; a file that does not match its config is refused
with the file and the problem named. Shapes in comments: B batch, T words, E embedding,
H hidden, F factor rank, K topics, V vocabulary, Vb topic-model vocabulary.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.lm.arpa import BOS, EOS, UNK, WordLM

CONFIG, WEIGHTS = "lm.json", "lm.safetensors"
TYPES = ("lstm", "tcnlm")
UNITS = ("word", "char")


class NeuralLmError(ValueError):
    """A neural LM directory that cannot be used (names the file and the problem)."""


@dataclass
class NeuralLmConfig:
    type: str = "lstm"  # lstm | tcnlm
    vocab: list[str] = field(default_factory=list)  # index 0 <unk>, 1 <s>, 2 </s>
    embed: int = 256
    hidden: int = 256
    dropout: float = 0.1
    topics: int = 0  # tcnlm: K
    factor: int = 0  # tcnlm: F, the rank of each gate's factorised weights
    bow_vocab: list[str] = field(default_factory=list)  # tcnlm: the topic model's words
    ntm_hidden: int = 256  # tcnlm: the topic encoder's hidden width
    # "word", or "char": a character LM (tokens are single characters, " " between words),
    # whose vocabulary is the fixed character alphabet; what cold fusion reads
    units: str = "word"

    def validate(self) -> None:
        if self.type not in TYPES:
            raise NeuralLmError(f"{CONFIG}: type must be one of {TYPES}, got {self.type!r}")
        if self.units not in UNITS:
            raise NeuralLmError(f"{CONFIG}: units must be one of {UNITS}, got {self.units!r}")
        if self.vocab[:3] != [UNK, BOS, EOS]:
            raise NeuralLmError(f"{CONFIG}: vocab must start with {[UNK, BOS, EOS]}")
        if self.units == "char" and self.type != "lstm":
            raise NeuralLmError(f"{CONFIG}: a character LM (units char) is an lstm")
        if self.type == "tcnlm" and (self.topics < 1 or self.factor < 1 or not self.bow_vocab):
            raise NeuralLmError(f"{CONFIG}: tcnlm needs topics >= 1, factor >= 1 and a "
                                f"bow_vocab; got {self.topics}, {self.factor}, "
                                f"{len(self.bow_vocab)} words")


class TopicModel(nn.Module):
    """NVDM-style topic model: bag of words (B, Vb) -> posterior N(mu, sigma) over K logits;
    t = softmax(z); reconstruction p(w | t) = softmax(t . beta)."""

    def __init__(self, vb: int, k: int, hidden: int):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(vb, hidden), nn.Softplus())
        self.mu = nn.Linear(hidden, k)
        self.logvar = nn.Linear(hidden, k)
        self.beta = nn.Linear(k, vb)  # topic -> word logits

    def forward(self, bow: torch.Tensor, sample: bool,
                kl_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """bow (B, Vb) counts -> t (B, K) and the per-row loss (B,): reconstruction +
        kl_weight x KL, the negative ELBO at weight 1 (0 for empty rows: no context, t = the
        prior's mean, uniform). A weight ramped up from 0 (KL annealing) keeps the posterior
        from collapsing onto the prior early in training."""
        has = bow.sum(-1) > 0  # (B,)
        h = self.enc(torch.log1p(bow))
        mu, logvar = self.mu(h), self.logvar(h).clamp(-8, 8)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        z = torch.where(has[:, None], z, torch.zeros_like(z))
        t = torch.softmax(z, dim=-1)  # (B, K)
        recon = -(bow * torch.log_softmax(self.beta(t), dim=-1)).sum(-1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)
        return t, torch.where(has, recon + kl_weight * kl, torch.zeros_like(recon))


class TopicLstm(nn.Module):
    """One LSTM layer whose input and recurrent weights are W(t) = Wa diag(Wb t) Wc, per gate."""

    def __init__(self, e: int, h: int, k: int, f: int):
        super().__init__()
        self.h, self.f = h, f
        s = 1 / math.sqrt(f)
        self.wc_x = nn.Parameter(torch.randn(4, f, e) / math.sqrt(e))  # (4, F, E)
        self.wc_h = nn.Parameter(torch.randn(4, f, h) / math.sqrt(h))  # (4, F, H)
        self.wb_x = nn.Parameter(torch.ones(4, f, k) + 0.1 * torch.randn(4, f, k))  # (4, F, K)
        self.wb_h = nn.Parameter(torch.ones(4, f, k) + 0.1 * torch.randn(4, f, k))
        self.wa_x = nn.Parameter(torch.randn(4, h, f) * s)  # (4, H, F)
        self.wa_h = nn.Parameter(torch.randn(4, h, f) * s)
        self.bias = nn.Parameter(torch.zeros(4, h))

    def forward(self, x: torch.Tensor, t: torch.Tensor,
                state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, T, E), t (B, K) -> outputs (B, T, H), (h, c) each (B, H)."""
        b = x.shape[0]
        sx = torch.einsum("gfk,bk->bgf", self.wb_x, t)  # (B, 4, F): diag(Wb t) per gate
        sh = torch.einsum("gfk,bk->bgf", self.wb_h, t)
        gx = torch.einsum("ghf,btgf->btgh", self.wa_x,
                          torch.einsum("gfe,bte->btgf", self.wc_x, x) * sx[:, None])  # (B,T,4,H)
        h, c = state if state is not None else (x.new_zeros(b, self.h), x.new_zeros(b, self.h))
        outs = []
        for i in range(x.shape[1]):
            gh = torch.einsum("ghf,bgf->bgh", self.wa_h,
                              torch.einsum("gfh,bh->bgf", self.wc_h, h) * sh)  # (B, 4, H)
            g = gx[:, i] + gh + self.bias
            ig, fg, og = torch.sigmoid(g[:, 0]), torch.sigmoid(g[:, 1]), torch.sigmoid(g[:, 2])
            c = fg * c + ig * torch.tanh(g[:, 3])
            h = og * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs, dim=1), (h, c)


class NeuralLm(nn.Module):
    """Word LSTM LM (type lstm) or TCNLM (type tcnlm) over `cfg.vocab`."""

    path: Path | None  # the directory it was loaded from (reports); None when built in code

    def __init__(self, cfg: NeuralLmConfig):
        super().__init__()
        self.path = None
        cfg.validate()
        self.cfg = cfg
        v = len(cfg.vocab)
        self.index = {w: i for i, w in enumerate(cfg.vocab)}
        self.embed = nn.Embedding(v, cfg.embed)
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.type == "lstm":
            self.rnn: nn.Module = nn.LSTM(cfg.embed, cfg.hidden, batch_first=True)
        else:
            self.ntm = TopicModel(len(cfg.bow_vocab), cfg.topics, cfg.ntm_hidden)
            self.rnn = TopicLstm(cfg.embed, cfg.hidden, cfg.topics, cfg.factor)
            self.bow_index = {w: i for i, w in enumerate(cfg.bow_vocab)}
        self.out = nn.Linear(cfg.hidden, v)

    def tokens_of(self, words: list[str]) -> list[str]:
        """A sentence's tokens: its words, or (units "char") its characters, " " between words."""
        return list(" ".join(words)) if self.cfg.units == "char" else words

    def ids(self, words: list[str]) -> list[int]:
        return [self.index.get(w, 0) for w in self.tokens_of(words)]

    def bow(self, contexts: list[list[str]]) -> torch.Tensor:
        """Bags of words (B, Vb) of each row's preceding context (topic-model words only)."""
        out = torch.zeros(len(contexts), len(self.cfg.bow_vocab))
        for b, words in enumerate(contexts):
            for w in words:
                j = self.bow_index.get(w)
                if j is not None:
                    out[b, j] += 1
        return out

    def topics_of(self, contexts: list[list[str]] | None, batch: int, sample: bool = False,
                  kl_weight: float = 1.0) -> tuple[torch.Tensor | None, torch.Tensor]:
        """t (B, K) from each row's context (None for an LSTM) and the topic-model loss (B,)."""
        if self.cfg.type != "tcnlm":
            return None, torch.zeros(batch)
        return self.ntm(self.bow(contexts or [[] for _ in range(batch)]), sample, kl_weight)

    def forward(self, inputs: torch.Tensor, t: torch.Tensor | None,
                state: Any = None) -> tuple[torch.Tensor, Any]:
        """inputs (B, T) word ids -> next-word log-probs (B, T, V) and the recurrent state."""
        x = self.drop(self.embed(inputs))
        if self.cfg.type == "lstm":
            y, state = self.rnn(x, state)
        else:
            y, state = self.rnn(x, t, state)
        return torch.log_softmax(self.out(self.drop(y)), dim=-1), state

    def tensors(self, sentences: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (<s> + tokens) and targets (tokens + </s>), each (B, T): inputs padded with
        </s>, targets with -100 (what nll_loss ignores); `sentences` are word lists."""
        ids = [self.ids(s) for s in sentences]
        n = max(len(r) for r in ids) + 1
        x = torch.tensor([[1, *r] + [2] * (n - len(r) - 1) for r in ids])
        y = torch.tensor([[*r, 2] + [-100] * (n - len(r) - 1) for r in ids])
        return x, y

    @torch.no_grad()
    def sentence_logprobs(self, sentences: list[list[str]],
                          contexts: list[list[str]] | None = None) -> list[float]:
        """Natural-log probability of each sentence (+ </s>), given its preceding context."""
        self.eval()
        out = []
        for i in range(0, len(sentences), 64):
            batch = sentences[i : i + 64]
            ctx = contexts[i : i + 64] if contexts is not None else None
            inp, tgt = self.tensors(batch)
            t, _ = self.topics_of(ctx, len(batch))
            lp, _ = self(inp, t)
            picked = lp.gather(-1, tgt.clamp(min=0)[..., None])[..., 0]  # (B, T)
            for b, s in enumerate(batch):
                out.append(float(picked[b, : len(self.tokens_of(s)) + 1].sum()))
        return out

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / CONFIG).write_text(json.dumps(asdict(self.cfg)) + "\n")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(d / WEIGHTS))
        return d


def load(directory: str | Path) -> NeuralLm:
    """A saved neural LM; a missing, malformed or mismatched file is refused by name."""
    from models.weights import load_weights

    d = Path(directory)
    cpath, wpath = d / CONFIG, d / WEIGHTS
    for p in (cpath, wpath):
        if not p.is_file():
            raise NeuralLmError(f"{p}: not found (a neural LM is a directory with {CONFIG} "
                                f"and {WEIGHTS})")
    try:
        raw = json.loads(cpath.read_text())
        cfg = NeuralLmConfig(**raw)
    except (json.JSONDecodeError, TypeError) as exc:
        raise NeuralLmError(f"{cpath}: not a neural LM config: {exc}") from None
    model = NeuralLm(cfg)
    load_weights(model, wpath, str(cpath), NeuralLmError)
    model.path = d  # where it came from (reports)
    return model.eval()


class NeuralWordLM(WordLM):
    """A NeuralLm behind the word-LM interface the decoders fuse (`vocab`, `order`,
    `unk_logprob`, `logprob(context, word)`, `prefixes`): shallow fusion of a neural LM in the
    CTC prefix beam and the RNN-T beam through the same LmFusion as the n-gram.

    p(word | context) comes from the LSTM state after the context (the last order - 1 words,
    <s> first while the utterance is short), cached per context tuple: extending a cached
    context by one word costs one LSTM step, so a beam's new words cost one step each. A TCNLM
    runs with the prior's (uniform) topic mixture here.
    """

    batched = True

    def __init__(self, model: NeuralLm, order: int = 16, cache_size: int = 100_000):
        if model.cfg.units != "word":
            raise NeuralLmError(f"{getattr(model, 'path', 'LM')}: a character LM (units "
                                f"{model.cfg.units!r}) cannot be fused word by word; it is "
                                "for cold fusion (chorus train head.cold_fusion_lm=DIR)")
        self.model = model.eval()
        self.order = order
        self.vocab = frozenset(model.cfg.vocab[3:])
        self.cache_size = cache_size
        self._cache: dict[tuple[str, ...], tuple[Any, np.ndarray]] = {}
        self._lock = threading.RLock()  # cache misses: the server's worker and loop share it
        self._topic, _ = model.topics_of(None, 1)
        self.unk_logprob = self.logprob((BOS,), UNK)

    def clear_cache(self) -> None:
        self._cache.clear()

    def _trim(self, context: tuple[str, ...]) -> tuple[str, ...]:
        """The last order - 1 words: what the distribution is conditioned on."""
        return context[len(context) - (self.order - 1):] if len(context) >= self.order else context

    @torch.no_grad()
    def _dist(self, context: tuple[str, ...]) -> tuple[Any, np.ndarray]:
        """(the recurrent state after `context`, next-word log-probs (V,))."""
        hit = self._cache.get(context)
        if hit is not None:
            return hit
        with self._lock:
            # one step from the cached one-word-shorter context; else the whole context from
            # scratch (an empty context reads as <s>)
            parent = self._cache.get(context[:-1]) if len(context) > 1 else None
            words, state = (context[-1:], parent[0]) if parent is not None else (context, None)
            if not words:
                words = (BOS,)
            ids = torch.tensor([[self.model.index.get(w, 0) for w in words]])  # (1, T)
            lp, state = self.model(ids, self._topic, state)
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            hit = self._cache[context] = (state, lp[0, -1].numpy())
            return hit

    @torch.no_grad()
    def prefetch(self, contexts: Iterable[tuple[str, ...]]) -> None:
        """The distributions of `contexts` not cached yet: those one word past a cached
        context (a beam's new words: nearly all) in ONE batched LSTM step, the rest one by
        one. Equal to computing each alone (up to float rounding of the batched matmuls).
        Thread-safe: the server's dispatcher worker and its event loop share one LM."""
        with self._lock:
            cache = self._cache
            todo = {c for c in map(self._trim, map(tuple, contexts)) if c not in cache}
            # parents held now: computing the others below may clear a full cache
            parents = {c: cache.get(c[:-1]) if len(c) > 1 else None for c in todo}
            rows = sorted(c for c, p in parents.items() if p is not None)
            for c in todo.difference(rows):
                self._dist(c)
            if len(rows) < 2:
                for c in rows:
                    self._dist(c)
                return
            states = [parents[c][0] for c in rows]  # type: ignore[index]
            lstm = self.model.cfg.type == "lstm"  # nn.LSTM state (1, B, H); TCNLM's (B, H)
            state = tuple(torch.cat([s[i] for s in states], dim=1 if lstm else 0)
                          for i in range(2))
            ids = torch.tensor([[self.model.index.get(c[-1], 0)] for c in rows])  # (B, 1)
            topic = None if self._topic is None else self._topic.expand(len(rows), -1)
            lp, (h, c) = self.model(ids, topic, state)
            lp = lp[:, -1].numpy()  # (B, V)
            if len(cache) + len(rows) > self.cache_size:
                cache.clear()
            for b, ctx in enumerate(rows):
                sl = slice(b, b + 1)
                cache[ctx] = ((h[:, sl], c[:, sl]) if lstm else (h[sl], c[sl]), lp[b])

    def logprob(self, context: tuple[str, ...], word: str) -> float:
        return float(self._dist(self._trim(tuple(context)))[1][self.model.index.get(word, 0)])
