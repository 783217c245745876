"""Every head (CTC, Gram-CTC, RNN-T, cold-fused RNN-T) and the online-CMN encoder stream
through the real server, on both CPU backends, with the final equal to the offline transcript
of the same audio."""

from __future__ import annotations

import pytest

from models.bundle import load
from tests.models.test_cli import tiny_bundle
from tests.server.conftest import running_server
from tests.server.test_ws import offline_text, speech, stream_audio  # noqa: F401 (fixture)


def stream_together(url: str, clips: list) -> list:
    """Each clip over its own WebSocket stream, all at once (threads); their messages."""
    import threading

    got: list = [None] * len(clips)

    def run(i: int) -> None:
        got[i] = stream_audio(url, clips[i], piece=1600)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clips))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return got


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
@pytest.mark.parametrize("head", ["gram_ctc", "rnnt", "rnnt_cold", "ctc_cmn"])
def test_head_streams_through_the_server(tmp_path, speech, head: str, backend: str) -> None:  # noqa: F811
    bundle = load(tiny_bundle(tmp_path / head, head=head))
    want = offline_text(bundle, speech)
    assert want  # random weights still emit: the comparison is not vacuous
    with running_server(bundle, backend=backend) as app:
        msgs = stream_audio(f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream", speech)
    finals = [m for m in msgs if m["type"] == "final"]
    assert len(finals) == 1 and finals[0]["text"] == want
    assert msgs[-1]["type"] == "end"


@pytest.mark.parametrize("head", ["rnnt", "rnnt_cold"])
def test_rnnt_streams_decoded_together_equal_each_alone(tmp_path, speech, head: str) -> None:  # noqa: F811
    """Concurrent RNN-T streams share dispatcher batches, whose greedy decoding is batched too
    (predictor and joiner across streams; a cold-fused LM's state too): each final equals its
    offline transcript."""

    bundle = load(tiny_bundle(tmp_path / head, head=head))
    clips = [speech, speech[: speech.size // 2], speech[speech.size // 3 :]]
    want = [offline_text(bundle, c) for c in clips]
    with running_server(bundle) as app:
        got = stream_together(f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream", clips)
        batches = app.dispatcher.metrics.batch_sizes
    assert [[m["text"] for m in g if m["type"] == "final"] for g in got] == [[w] for w in want]
    assert max(batches) > 1, batches  # the streams did share steps


@pytest.mark.parametrize("head", ["ctc", "rnnt"])
def test_beam_streams_with_a_neural_lm_decode_in_the_dispatcher_and_equal_each_alone(
        tmp_path, speech, head: str) -> None:  # noqa: F811
    """Beam search + a neural LM (shallow fusion) for concurrent streams runs in the
    dispatcher's worker thread, not on the event loop: every LM step during streaming ran on
    a `dispatch` thread (the partial results' </s> scores were batched ahead, so reading a
    result costs no LM step), and each final equals its offline transcript alone."""
    import dataclasses
    import threading

    from models.decoding import LmConfig, LmFusion
    from models.lm.neural import NeuralLm, NeuralLmConfig, NeuralWordLM
    from tests.models.test_neural_fusion import VOCAB

    class Threads(NeuralLm):  # the same LM, noting which thread ran each step
        def forward(self, inputs, t, state=None):  # type: ignore[override]
            self.seen.append((threading.current_thread().name, int(inputs.shape[0])))
            return super().forward(inputs, t, state)

    bundle = load(tiny_bundle(tmp_path / head, head=head))
    lm = NeuralLm(NeuralLmConfig(vocab=VOCAB, embed=8, hidden=8)).eval()
    lm.__class__ = Threads
    lm.seen = []
    word_lm = NeuralWordLM(lm)
    bundle.lm = LmFusion(word_lm, LmConfig(weight=0.3, word_bonus=2.0, oov_penalty=0.0))
    bundle.decoding = dataclasses.replace(bundle.decoding, decoder="beam", beam_size=4)
    clips = [speech, speech[: speech.size // 2], speech[speech.size // 3 :]]
    want = [offline_text(bundle, c) for c in clips]
    assert all(want) and (head != "ctc" or any(" " in w for w in want)), want  # LM work
    with running_server(bundle) as app:
        word_lm.clear_cache()  # the offline pass filled it: the streams start afresh
        lm.seen.clear()
        got = stream_together(f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream", clips)
        batches = app.dispatcher.metrics.batch_sizes
    assert [[m["text"] for m in g if m["type"] == "final"] for g in got] == [[w] for w in want]
    assert lm.seen and {name.split("_")[0] for name, _ in lm.seen} == {"dispatch"}, lm.seen
    assert max(rows for _, rows in lm.seen) > 1  # word endings went through the LM batched
    assert max(batches) > 1, batches  # the streams did share steps (and decoding calls)
