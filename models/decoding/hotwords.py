"""Per-stream hotword (contextual) biasing for CTC prefix beam search.

Hotword phrases become a character trie (the character alphabet, whatever units the model
emits: the beam advances it through each token's spelling). Each beam prefix carries a context state: the trie
node it has matched so far from a word start (or "no match" inside another word), the bonus of
hotwords it completed (`committed`) and the bonus of the match in progress (`partial`). Each
matched character earns `boost` (log domain); a match that breaks loses its partial bonus, so
only whole hotwords keep a reward (the same idea as WeNet's context graph and sherpa-onnx's
hotwords). Search ranks prefixes by acoustic log prob + committed + partial; final results use
committed only. Matches start at word starts; a phrase may span words ("kitchen lights").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models.tokenizer import char_ids

NO_MATCH = -1  # inside a word that is no hotword: wait for the next space


@dataclass
class _Trie:
    children: list[dict[int, int]] = field(default_factory=lambda: [{}])
    boost: list[float] = field(default_factory=lambda: [0.0])  # per node: bonus per char
    is_end: list[bool] = field(default_factory=lambda: [False])


@dataclass(frozen=True)
class Context:
    node: int = 0  # trie node (0 = root, at a word start) or NO_MATCH
    committed: float = 0.0
    partial: float = 0.0

    @property
    def score(self) -> float:
        return self.committed + self.partial


class Hotwords:
    def __init__(self, phrases: list[tuple[str, float]]):
        self.trie = _Trie()
        self.space = char_ids(" ")[0]
        for phrase, boost in phrases:
            text = " ".join(phrase.lower().split())
            if not text:
                raise ValueError("hotword phrases must not be empty")
            if not 0.0 < boost <= 20.0:
                raise ValueError(f"hotword boost must be in (0, 20], got {boost} for {phrase!r}")
            try:
                ids = char_ids(text)
            except ValueError as exc:
                raise ValueError(f"hotword {phrase!r}: {exc}") from None
            node = 0
            for t in ids:
                nxt = self.trie.children[node].get(t)
                if nxt is None:
                    nxt = len(self.trie.children)
                    self.trie.children[node][t] = nxt
                    self.trie.children.append({})
                    self.trie.boost.append(boost)
                    self.trie.is_end.append(False)
                node = nxt
                self.trie.boost[node] = max(self.trie.boost[node], boost)
            self.trie.is_end[node] = True
        self.max_boost = max(self.trie.boost)  # the most one character can add to a score

    def advance(self, ctx: Context, token: int) -> Context:
        tr = self.trie
        if token == self.space:
            if ctx.node != NO_MATCH and self.space in tr.children[ctx.node]:
                nxt = tr.children[ctx.node][self.space]  # a phrase goes on across words
                return Context(nxt, ctx.committed, ctx.partial + tr.boost[nxt])
            if ctx.node != NO_MATCH and tr.is_end[ctx.node]:
                return Context(0, ctx.committed + ctx.partial, 0.0)
            return Context(0, ctx.committed, 0.0)
        if ctx.node == NO_MATCH:
            return ctx
        child = tr.children[ctx.node].get(token)
        if child is None:
            return Context(NO_MATCH, ctx.committed, 0.0)
        return Context(child, ctx.committed, ctx.partial + tr.boost[child])

    def final_score(self, ctx: Context) -> float:
        """At the end of the utterance a hotword just completed keeps its bonus."""
        if ctx.node not in (NO_MATCH, 0) and self.trie.is_end[ctx.node]:
            return ctx.committed + ctx.partial
        return ctx.committed
