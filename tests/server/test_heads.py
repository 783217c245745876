"""Every head (CTC, Gram-CTC, RNN-T) streams through the real server, on both CPU backends,
with the final equal to the offline transcript of the same audio."""

from __future__ import annotations

import pytest

from models.bundle import load
from tests.models.test_cli import tiny_bundle
from tests.server.conftest import running_server
from tests.server.test_ws import offline_text, speech, stream_audio  # noqa: F401 (fixture)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
@pytest.mark.parametrize("head", ["gram_ctc", "rnnt"])
def test_head_streams_through_the_server(tmp_path, speech, head: str, backend: str) -> None:  # noqa: F811
    bundle = load(tiny_bundle(tmp_path / head, head=head))
    want = offline_text(bundle, speech)
    assert want  # random weights still emit: the comparison is not vacuous
    with running_server(bundle, backend=backend) as app:
        msgs = stream_audio(f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream", speech)
    finals = [m for m in msgs if m["type"] == "final"]
    assert len(finals) == 1 and finals[0]["text"] == want
    assert msgs[-1]["type"] == "end"
