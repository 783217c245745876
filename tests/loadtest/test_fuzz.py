"""`chorus loadtest fuzz`, tiny, against a real server given by URL (on loopback, in this
process): generated hostile messages over WebSocket and gRPC give no internal error, no hang,
no crash, and the healthy stream beside them keeps its solo transcript."""

from __future__ import annotations

from loadtest.fuzz import FuzzConfig, generate, markdown, run_fuzz
from models.bundle import load
from server.session import Limits
from tests.models.test_cli import tiny_bundle
from tests.server.conftest import running_server


def test_same_seed_same_cases() -> None:
    pool = [bytes(range(256)) * 100, bytes(6400)]
    one = [c.summary() for c in generate(FuzzConfig(messages=300, seed=7), pool, 4096, True)]
    two = [c.summary() for c in generate(FuzzConfig(messages=300, seed=7), pool, 4096, True)]
    other = [c.summary() for c in generate(FuzzConfig(messages=300, seed=8), pool, 4096, True)]
    assert one == two and one != other
    kinds = {s.split(":")[0].split(" ", 2)[2] for s in one}
    assert {"random_text", "wav_corrupt", "resume_junk", "native_stream", "unary"} <= kinds


def test_fuzz_against_a_running_server(tmp_path) -> None:
    bundle = load(tiny_bundle(tmp_path / "b"))
    limits = Limits(max_frame_bytes=65536, max_stream_s=60, idle_timeout_s=5)
    with running_server(bundle, limits=limits, resume_window_s=2, max_streams=256) as app:
        cfg = FuzzConfig(messages=400, seed=3, concurrency=4, timeout_s=15, healthy=1,
                         healthy_seconds=1.0, max_frame_bytes=65536)
        r = run_fuzz(cfg, f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream",
                     f"127.0.0.1:{app.cfg.grpc_port}", progress_on=False)
    assert r["messages"] >= 380 and r["cases"] > 50, r
    assert (r["internal"], r["hangs"], r["crashes"], r["non_json"]) == (0, 0, [], 0), r["examples"]
    assert r["healthy"]["total"] >= 1 and r["healthy"]["intact"] == r["healthy"]["total"]
    assert {"ws:1007", "ws:1008", "grpc:INVALID_ARGUMENT"} <= set(r["outcomes"]), r["outcomes"]
    assert {"bad_config", "bad_audio", "invalid_json"} <= set(r["error_codes"]), r["error_codes"]
    assert r["ok"] and "| internal (1011 / INTERNAL) |" in markdown(r)
