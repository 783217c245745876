"""Neural LMs (models/lm/neural.py): TCNLM's factorised weights, the topic model, and the
saved format (loading runs no code; mismatched files are refused by name)."""

import json

import pytest
import torch

from models.lm.neural import NeuralLm, NeuralLmConfig, NeuralLmError, TopicLstm, load

VOCAB = ["<unk>", "<s>", "</s>", "set", "an", "alarm", "for", "seven", "play", "music"]


def tcnlm() -> NeuralLm:
    torch.manual_seed(0)
    return NeuralLm(NeuralLmConfig(type="tcnlm", vocab=VOCAB, embed=8, hidden=6, dropout=0.0,
                                   topics=3, factor=5, bow_vocab=VOCAB[3:], ntm_hidden=7))


def test_topic_lstm_gates_use_wa_diag_wb_t_wc() -> None:
    """The layer's first step equals an LSTM step with the explicit matrices
    W_g(t) = Wa_g diag(Wb_g t) Wc_g (input and recurrent), per gate, for a random t."""
    torch.manual_seed(1)
    layer = TopicLstm(e=4, h=3, k=2, f=5)
    x = torch.randn(1, 1, 4)
    t = torch.softmax(torch.randn(1, 2), -1)
    h0, c0 = torch.randn(1, 3), torch.randn(1, 3)
    out, (h1, c1) = layer(x, t, (h0, c0))
    gates = []
    for g in range(4):
        wx = layer.wa_x[g] @ torch.diag(layer.wb_x[g] @ t[0]) @ layer.wc_x[g]  # (H, E)
        wh = layer.wa_h[g] @ torch.diag(layer.wb_h[g] @ t[0]) @ layer.wc_h[g]  # (H, H)
        gates.append(wx @ x[0, 0] + wh @ h0[0] + layer.bias[g])
    i, f, o = (torch.sigmoid(gates[j]) for j in range(3))
    c = f * c0[0] + i * torch.tanh(gates[3])
    torch.testing.assert_close(c1[0], c)
    torch.testing.assert_close(h1[0], o * torch.tanh(c))
    torch.testing.assert_close(out[0, 0], h1[0])


def test_no_context_means_the_uniform_topic_mixture_and_context_changes_it() -> None:
    model = tcnlm().eval()
    with torch.no_grad():
        t, loss = model.topics_of([[], ["play", "music"]], 2)
    torch.testing.assert_close(t[0], torch.full((3,), 1 / 3))
    assert float(loss[0]) == 0.0 and float(loss[1]) > 0
    assert not torch.allclose(t[1], t[0])
    a, b = model.sentence_logprobs([["set", "an", "alarm"]] * 2, [[], ["play", "music"]])
    assert a != b


@pytest.mark.parametrize("kind", ["lstm", "tcnlm"])
def test_save_load_round_trip_scores_identically(tmp_path, kind) -> None:
    torch.manual_seed(0)
    model = tcnlm() if kind == "tcnlm" else NeuralLm(NeuralLmConfig(vocab=VOCAB, embed=8, hidden=6))
    model.eval().save(tmp_path / "lm")
    back = load(tmp_path / "lm")
    sents = [["set", "an", "alarm", "for", "seven"], ["play", "zebra"]]
    assert back.sentence_logprobs(sents) == model.sentence_logprobs(sents)
    assert (tmp_path / "lm/lm.json").read_text().startswith("{")


def test_bad_files_are_refused_with_the_file_named(tmp_path) -> None:
    NeuralLm(NeuralLmConfig(vocab=VOCAB, embed=8, hidden=6)).save(tmp_path / "a")
    with pytest.raises(NeuralLmError, match="missing/lm.json: not found"):
        load(tmp_path / "missing")
    cfg = json.loads((tmp_path / "a/lm.json").read_text())
    (tmp_path / "a/lm.json").write_text(json.dumps({**cfg, "hidden": 7}))
    with pytest.raises(NeuralLmError, match=r"lm.safetensors: tensor .* has shape"):
        load(tmp_path / "a")
    (tmp_path / "a/lm.json").write_text(json.dumps({**cfg, "type": "gpt"}))
    with pytest.raises(NeuralLmError, match="type must be one of"):
        load(tmp_path / "a")
    (tmp_path / "a/lm.json").write_text(json.dumps({**cfg, "evil": "__import__('os')"}))
    with pytest.raises(NeuralLmError, match="not a neural LM config"):
        load(tmp_path / "a")
    (tmp_path / "a/lm.json").write_text(json.dumps(cfg))
    (tmp_path / "a/lm.safetensors").write_bytes(b"\x80\x04not a tensor file")
    with pytest.raises(NeuralLmError, match="lm.safetensors cannot be read"):
        load(tmp_path / "a")


def test_kl_weight_scales_only_the_topic_models_kl_term() -> None:
    """Loss at KL weight 0 is the reconstruction alone; at 1 it adds the (non-negative) KL;
    at 0.5 it sits halfway (the posterior mean, no sampling)."""
    model = tcnlm().eval()
    ctx = [["play", "music", "set"]]
    with torch.no_grad():
        l0, l1, lh = (model.topics_of(ctx, 1, kl_weight=w)[1][0] for w in (0.0, 1.0, 0.5))
    assert float(l1) >= float(l0) and float(lh) == pytest.approx((float(l0) + float(l1)) / 2)


@torch.no_grad()
def test_tcnlm_with_one_topic_equals_a_plain_lstm_with_the_same_weights() -> None:
    """K = 1: t = [1] for any context, so each gate's W(t) = Wa diag(Wb[:, 0]) Wc is one fixed
    matrix; an `lstm` NeuralLm given those matrices (PyTorch's gate order i, f, g, o; the one
    bias in bias_ih) and the same embedding and output layer scores every sentence alike."""
    torch.manual_seed(3)
    vocab = VOCAB
    topic = NeuralLm(NeuralLmConfig(type="tcnlm", vocab=vocab, embed=6, hidden=5, dropout=0.0,
                                    topics=1, factor=4, bow_vocab=vocab[3:], ntm_hidden=7)).eval()
    plain = NeuralLm(NeuralLmConfig(type="lstm", vocab=vocab, embed=6, hidden=5,
                                    dropout=0.0)).eval()
    layer = topic.rnn
    order = (0, 1, 3, 2)  # TopicLstm's gates (i, f, o, candidate) in PyTorch's order i, f, g, o
    w_ih = torch.cat([layer.wa_x[g] @ torch.diag(layer.wb_x[g, :, 0]) @ layer.wc_x[g] for g in order])
    w_hh = torch.cat([layer.wa_h[g] @ torch.diag(layer.wb_h[g, :, 0]) @ layer.wc_h[g] for g in order])
    plain.rnn.weight_ih_l0.copy_(w_ih)
    plain.rnn.weight_hh_l0.copy_(w_hh)
    plain.rnn.bias_ih_l0.copy_(torch.cat([layer.bias[g] for g in order]))
    plain.rnn.bias_hh_l0.zero_()
    plain.embed.load_state_dict(topic.embed.state_dict())
    plain.out.load_state_dict(topic.out.state_dict())
    sentences = [["set", "an", "alarm", "for", "seven"], ["play", "music"], ["zebra", "alarm"]]
    contexts = [["play", "music", "music"], [], ["alarm"]]
    got = topic.sentence_logprobs(sentences, contexts)
    assert got == pytest.approx(plain.sentence_logprobs(sentences), abs=1e-5)
    assert len(set(got)) == 3  # different sentences, different scores: not vacuous
