"""Every head (CTC, Gram-CTC, RNN-T, cold-fused RNN-T) and the online-CMN encoder stream
through the real server, on both CPU backends, with the final equal to the offline transcript
of the same audio."""

from __future__ import annotations

import pytest

from models.bundle import load
from tests.models.test_cli import tiny_bundle
from tests.server.conftest import running_server
from tests.server.test_ws import offline_text, speech, stream_audio  # noqa: F401 (fixture)


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
    import threading

    bundle = load(tiny_bundle(tmp_path / head, head=head))
    clips = [speech, speech[: speech.size // 2], speech[speech.size // 3 :]]
    want = [offline_text(bundle, c) for c in clips]
    got: list = [None] * len(clips)
    with running_server(bundle) as app:
        url = f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream"

        def run(i: int) -> None:
            got[i] = stream_audio(url, clips[i], piece=1600)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clips))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        batches = app.dispatcher.metrics.batch_sizes
    assert [[m["text"] for m in g if m["type"] == "final"] for g in got] == [[w] for w in want]
    assert max(batches) > 1, batches  # the streams did share steps
