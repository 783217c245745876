"""`chorus select`: choose which utterances of an unlabelled pool to label next.

Methods (Huang et al. 2016, "Active learning for speech recognition: the power of gradients"):
- `egl`: Expected Gradient Length. For an utterance x with the model's N-best transcripts
  y_1..y_N (CTC prefix beam search, no LM) and their posteriors renormalised over the list,
  EGL(x) = sum_i p(y_i | x) ||grad_theta L_ctc(x, y_i)||^2: how much the model would change if
  it were told the answer. theta is the output layer (the CTC head's weight and bias), a stated
  subset as the paper allows: its per-sample gradients are exact and cheap, because with
  z = H W^T + b (H: the encoder's frames, (T, D)) the gradient is grad_W = G^T H, grad_b =
  sum_t G_t with G = dL/dz (T, V), and G for all N hypotheses comes from one backward pass
  through the CTC loss alone (the encoder runs once, forward only). Optionally divided by the
  number of frames (`length_norm`), since long utterances have long gradients.
  For an RNN-T bundle theta is the joiner's output layer (`out`: logits z[t, u] = W h[t, u] + b
  with h[t, u] = tanh(enc_t + pred_u)), likewise exact: grad_W = sum_{t,u} G[t, u]^T h[t, u]
  with G = dL/dz over the (T, U+1) lattice from one backward pass through the transducer loss
  for all hypotheses at once (padded to the longest; the loss does not reach the padding, so
  its G is zero), the encoder and the predictor run forward only. Gram-CTC is refused.
- `confidence`: lowest confidence first (the best hypothesis's mean word confidence).
- `random`: a seeded shuffle. `length`: longest first.
The report gives every utterance's scores and the Spearman correlation of EGL with confidence
(the paper found them related but not the same: EGL is not just low confidence).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch

METHODS = ("egl", "confidence", "random", "length")


@dataclass(frozen=True)
class Scores:
    egl: float  # expected squared gradient norm (per frame with length_norm)
    confidence: float  # the best hypothesis's confidence
    frames: int  # encoder frames
    nbest: int  # hypotheses the expectation ran over


def head_of(bundle: Any) -> torch.nn.Linear:
    """The output layer EGL differentiates: the CTC head's projection or the RNN-T joiner's."""
    head = bundle.model.cfg.head
    if head == "ctc":
        return bundle.model.head.proj
    if head == "rnnt":
        return bundle.model.head.out
    raise ValueError(f"EGL needs a CTC or RNN-T bundle (head 'ctc' or 'rnnt'); this one's head "
                     f"is {head!r}")


def expected_grad_norm(proj: torch.nn.Linear, enc: torch.Tensor,
                       hyps: list[tuple[list[int], float]], blank: int
                       ) -> tuple[float, torch.Tensor, torch.Tensor]:
    """sum_i p_i ||grad_{W,b} L_ctc(y_i)||^2 for the output layer `proj` over encoder frames
    `enc` (T, D), hypotheses (token ids, log score) renormalised over the list -> (EGL, the
    posteriors (N,), the squared norms (N,)). One backward pass through the loss alone."""
    n, t = len(hyps), enc.shape[0]
    with torch.no_grad():
        z = proj(enc)  # (T, V)
    post = torch.softmax(torch.tensor([s for _, s in hyps], dtype=torch.float64), dim=0)
    zr = z.unsqueeze(1).repeat(1, n, 1).requires_grad_(True)  # (T, N, V): a copy per hypothesis
    targets = torch.tensor([i for ids, _ in hyps for i in ids], dtype=torch.long)
    loss = torch.nn.functional.ctc_loss(
        torch.log_softmax(zr, dim=-1), targets, torch.full((n,), t, dtype=torch.long),
        torch.tensor([len(ids) for ids, _ in hyps], dtype=torch.long), blank=blank,
        reduction="sum", zero_infinity=True)
    (g,) = torch.autograd.grad(loss, zr)  # (T, N, V): each hypothesis's dL/dz, exactly
    gw = torch.einsum("tnv,td->nvd", g, enc.detach())  # (N, V, D) = G_i^T H
    sq = (gw.pow(2).sum(dim=(1, 2)) + g.sum(dim=0).pow(2).sum(dim=-1)).double()  # (N,)
    return float((post * sq).sum()), post, sq


LATTICE_FLOATS = 1 << 25  # joiner states per batch of hypotheses (128 MiB of float32)


def expected_grad_norm_rnnt(head: Any, enc: torch.Tensor, hyps: list[tuple[list[int], float]],
                            blank: int) -> tuple[float, torch.Tensor, torch.Tensor]:
    """As expected_grad_norm, for a transducer head (models.nn.transducer.TransducerHead) over
    its joiner's output layer `head.out`; `enc` (T, J) is the encoder in the joiner space.
    Hypotheses are padded to the longest of their batch (the loss never reaches a padded cell,
    so its gradient there is zero); batches are cut so their joiner states stay under
    LATTICE_FLOATS floats (a long utterance's 8-best would otherwise take gigabytes)."""
    post = torch.softmax(torch.tensor([s for _, s in hyps], dtype=torch.float64), dim=0)
    t, j = enc.shape
    longest = max(len(ids) for ids, _ in hyps) + 1
    group = max(1, LATTICE_FLOATS // (t * longest * j))
    sq = torch.cat([_lattice_sq_norms(head, enc, [ids for ids, _ in hyps[k: k + group]], blank)
                    for k in range(0, len(hyps), group)])
    return float((post * sq).sum()), post, sq


def _lattice_sq_norms(head: Any, enc: torch.Tensor, seqs: list[list[int]],
                      blank: int) -> torch.Tensor:
    """||grad_{W,b} L_rnnt(y)||^2 of the joiner's output layer for each token sequence (N,)."""
    from training.losses.rnnt import rnnt_loss

    n, t = len(seqs), enc.shape[0]
    u = max(len(ids) for ids in seqs)
    targets = torch.tensor([ids + [blank] * (u - len(ids)) for ids in seqs],
                           dtype=torch.long).reshape(n, u)  # (N, U) padded
    with torch.no_grad():
        pred = head.predict_sequence(targets)  # (N, U+1, J)
        hid = torch.tanh(enc[None, :, None, :] + pred[:, None, :, :])  # (N, T, U+1, J)
        z = head.out(hid)  # (N, T, U+1, V)
    z.requires_grad_(True)
    loss = rnnt_loss(torch.log_softmax(z, dim=-1), targets, torch.full((n,), t),
                     torch.tensor([len(ids) for ids in seqs]), blank=blank, reduction="sum")
    (g,) = torch.autograd.grad(loss, z)  # (N, T, U+1, V): each hypothesis's dL/dz
    gw = torch.einsum("ntuv,ntuj->nvj", g, hid)  # (N, V, J)
    return (gw.pow(2).sum(dim=(1, 2)) + g.sum(dim=(1, 2)).pow(2).sum(dim=-1)).double()


def egl_scores(bundle: Any, enc: torch.Tensor, *, nbest: int = 8,
               length_norm: bool = False) -> Scores:
    """EGL of one utterance from its encoder frames `enc` ((T, D) for CTC, (T, J) in the
    joiner space for RNN-T: what score_pool's forward pass gives), over the output layer."""
    from models.decoding import NBestDecoder, bundle_decoder

    proj = head_of(bundle)
    rnnt = bundle.model.cfg.head == "rnnt"
    tok = bundle.tokenizer
    dec = cast(NBestDecoder, bundle_decoder(bundle, "beam", beam_size=nbest, lm=None))
    if rnnt:
        dec.update(enc)
    else:
        with torch.no_grad():
            dec.update(torch.log_softmax(proj(enc), dim=-1))  # (T, V)
    best = dec.finalize()
    t = enc.shape[0]
    hyps = dec.nbest_ids()[:nbest]  # the tokens the beam scored (not the text re-encoded)
    hyps = [(ids, s) for ids, s in hyps if rnnt or len(ids) <= t] or [([], 0.0)]
    egl, _, _ = (expected_grad_norm_rnnt(bundle.model.head, enc, hyps, tok.blank_id) if rnnt
                 else expected_grad_norm(proj, enc, hyps, tok.blank_id))
    return Scores(egl / t if length_norm else egl, float(best.confidence), t, len(hyps))


def spearman(a: list[float], b: list[float]) -> float | None:
    if len(a) < 3:
        return None
    ra, rb = (np.argsort(np.argsort(x)).astype(float) for x in (a, b))
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def choose(method: str, ids: list[str], scores: list[Scores], durations: list[float],
           budget: int, seed: int = 0) -> list[str]:
    """The `budget` ids to label next, most wanted first."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if budget < 1:
        raise ValueError(f"budget must be >= 1 utterance, got {budget}")
    idx = list(range(len(ids)))
    if method == "egl":
        idx.sort(key=lambda i: -scores[i].egl)
    elif method == "confidence":
        idx.sort(key=lambda i: scores[i].confidence)
    elif method == "length":
        idx.sort(key=lambda i: -durations[i])
    else:
        np.random.default_rng(seed).shuffle(idx)
    return [ids[i] for i in idx[:budget]]


def score_pool(bundle: Any, utts: list[Any], *, method: str, nbest: int = 8,
               length_norm: bool = False, progress: bool = True) -> list[Scores]:
    """Scores of every pool utterance (EGL and confidence need the model; random and length
    only need the manifest, but the report still carries both scores when asked for EGL)."""
    from tqdm import tqdm

    from training.eval.run import forward_all

    if method in ("random", "length"):
        return [Scores(float("nan"), float("nan"), 0, 0) for _ in utts]
    head_of(bundle)  # a clear error before the forward pass
    # CTC: the encoder's frames (the head is differentiated); RNN-T: the model's output, the
    # encoder in the joiner space (what the decoder and the joiner take)
    encs, _ = forward_all(bundle, utts, progress=progress, desc="encode",
                          encoder_only=bundle.model.cfg.head == "ctc")
    return [egl_scores(bundle, e, nbest=nbest, length_norm=length_norm)
            for e in tqdm(encs, desc=f"{method} scores", unit="utt", disable=not progress)]
