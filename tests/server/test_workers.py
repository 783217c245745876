"""`chorus serve --workers N` (server/workers.py): N serving processes on the same ports.

Sans I/O first (which worker a token names, admission counted over workers, /metrics merged),
then `chorus serve --workers 2` as a real process with the shipped bundle and real synthesized
speech: both workers take connections on the one port; admission counts the streams of both;
/metrics from either worker sums both; a stream cut on one worker and resumed through the
other (WebSocket, native gRPC) gives exactly the finals of an uninterrupted run; SIGTERM
drains both workers (owed finals, exit 0).
"""

from __future__ import annotations

import json
import multiprocessing
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from server.workers import Slots, Worker, resolve_count
from tests.server.conftest import free_port
from tests.server.test_resume import FRAME, START, cut, speech, ws_run  # noqa: F401 (fixture)

ENDPOINT_YAML = "endpoint:\n  max_utterance_s: 1.0\n"  # several finals per stream


# ---- sans I/O ---------------------------------------------------------------------------------
def test_a_token_names_the_worker_that_holds_its_stream() -> None:
    w = Worker(index=1, count=3, rundir="/r")
    assert w.prefix == "w1."
    assert w.owner("w0.abc") == 0 and w.owner("w2.x-y_z") == 2
    assert w.owner("w1.abc") is None  # its own: answered here
    assert w.owner("w3.abc") is None and w.owner("w9.abc") is None  # no such worker
    for other in ("abc", "", "w.abc", "wx.abc", "w-1.abc", None, 7):
        assert w.owner(other) is None
    assert w.ws_socket(2) == "/r/ws-2.sock" and w.grpc_target() == "unix:/r/grpc-1.sock"
    assert resolve_count(3) == 3 and resolve_count(0) >= 1
    with pytest.raises(ValueError, match="workers must be >= 0"):
        resolve_count(-1)


def test_the_default_is_one_worker_per_core_on_cpu_and_one_for_a_gpu_or_port_0() -> None:
    """workers=0 (ServerConfig's default): the cores this process may use, divided by the
    model threads per worker; one with the model on cuda (one process feeds the GPU) or an
    ephemeral port (each worker would bind its own)."""
    import os
    from dataclasses import replace

    from server.app import ServerConfig
    from server.workers import usable_cores

    cores = usable_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0))
    cfg = ServerConfig(ws_port=8000, grpc_port=8001)
    assert cfg.workers == 0 and resolve_count(cfg.workers, cfg) == cores
    assert resolve_count(0, replace(cfg, threads=2)) == max(cores // 2, 1)
    assert resolve_count(0, replace(cfg, device="cuda")) == 1
    assert resolve_count(0, replace(cfg, ws_port=0)) == 1
    assert resolve_count(3, replace(cfg, device="cuda")) == 3  # asked for: given


def test_usable_cores_follow_a_cgroup_cpu_quota(tmp_path) -> None:
    """A container's CPU quota caps the count (rounded up): cgroup v2 cpu.max and v1's
    cfs files; no quota ("max", -1) leaves the affinity's cores."""
    import os

    from server.workers import usable_cores

    cores = len(os.sched_getaffinity(0))
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2/cpu.max").write_text("150000 100000\n")
    assert usable_cores(tmp_path / "v2") == min(cores, 2)
    (tmp_path / "v2/cpu.max").write_text("max 100000\n")
    assert usable_cores(tmp_path / "v2") == cores
    (tmp_path / "v1/cpu").mkdir(parents=True)
    (tmp_path / "v1/cpu/cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "v1/cpu/cpu.cfs_period_us").write_text("100000\n")
    assert usable_cores(tmp_path / "v1") == 1
    (tmp_path / "v1/cpu/cpu.cfs_quota_us").write_text("-1\n")
    assert usable_cores(tmp_path / "v1") == cores
    assert usable_cores(tmp_path / "none") == cores


def test_slots_admit_up_to_max_streams_over_all_workers() -> None:
    shared = multiprocessing.get_context("spawn").Array("i", 6)
    a = Slots(shared, Worker(0, 2, "/r"), max_streams=3)
    b = Slots(shared, Worker(1, 2, "/r"), max_streams=3)
    assert a.take() and a.take() and b.take()
    assert not b.take() and not a.take()  # 3 open over the two workers
    assert a.open == b.open == 3
    a.detached(+1)  # a detached stream keeps its slot, but not a connection
    assert b.attached == 2 and not b.take()
    a.detached(-1)
    a.give()
    assert b.take() and list(shared) == [1, 2, 0, 0, 0, 0]
    a.drained()  # one worker's drain done is not the server's
    assert not a.all_drained and not b.all_drained
    b.drained()
    assert a.all_drained and b.all_drained and list(shared)[4:] == [1, 1]


def test_metrics_of_workers_merge_into_server_totals() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from server.dispatch import Dispatcher
    from server.metrics import Metrics, merge_exposition

    texts = {}
    for i, (streams, latency) in enumerate([(2, 0.004), (5, 0.3)]):
        m = Metrics(Dispatcher(backend=None))
        m.streams_total.inc(streams)
        m.errors.labels("bad_config").inc(i + 1)
        m.processing.labels("final").observe(latency)
        texts[i] = m.render().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(merge_exposition(texts).decode())
               for s in fam.samples}
    assert samples[("chorus_streams_total", ())] == 7
    assert samples[("chorus_errors_total", (("code", "bad_config"),))] == 3
    final = (("result", "final"),)
    assert samples[("chorus_processing_latency_seconds_count", final)] == 2
    assert samples[("chorus_processing_latency_seconds_bucket", (("le", "0.005"), *final))] == 1
    assert samples[("chorus_processing_latency_seconds_bucket", (("le", "0.5"), *final))] == 2
    # one process's figures stay apart
    assert ("process_resident_memory_bytes", (("worker", "0"),)) in samples
    assert ("process_resident_memory_bytes", (("worker", "1"),)) in samples
    assert ("chorus_threads", (("worker", "1"),)) in samples


# ---- a real two-worker server -----------------------------------------------------------------
@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    """`chorus serve --workers 2` (shipped bundle, greedy, max 3 streams): (proc, ws, grpc)."""
    cfg = tmp_path_factory.mktemp("w") / "serve.yaml"
    cfg.write_text(ENDPOINT_YAML)
    ws_port, grpc_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "clients.cli", "serve", "--config", str(cfg),
                             "--workers", "2", "--ws-port", str(ws_port), "--grpc-port",
                             str(grpc_port), "--max-streams", "3", "--decoder", "greedy"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + 180
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "chorus: listening on" in line:
            assert "(2 workers)" in line
            threading.Thread(target=lambda: [lines.append(x) for x in proc.stdout],  # type: ignore[union-attr]
                             daemon=True).start()
            yield proc, ws_port, grpc_port, lines
            break
        if proc.poll() is not None:
            raise AssertionError("server did not start: " + "".join(lines))
    else:
        proc.kill()
        raise AssertionError("server did not start in time: " + "".join(lines))
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/v1/stream"


def connect_to(port: int, *, avoid: int | None = None, want: int | None = None):
    """A WebSocket to the port, reconnecting until the kernel gives it to a worker other than
    `avoid` (or to `want`): (connection, worker index from X-Chorus-Worker)."""
    for _ in range(64):
        ws = connect(url(port))
        w = int(ws.response.headers["X-Chorus-Worker"])
        if w != avoid and want in (None, w):
            return ws, w
        ws.close()
    raise AssertionError(f"64 connections, none to another worker than {avoid} / to {want}")


def solo(port: int, pcm: bytes) -> tuple[list[dict], dict]:
    ws, _ = connect_to(port)
    return ws_run(ws, START, pcm)


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    text = urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_two_workers_share_the_port_admission_and_metrics(workers) -> None:
    """Both workers take connections on the one port; with max_streams 3 the fourth stream is
    refused (503) wherever the three are; every scrape, whichever worker answers, counts the
    streams of both; per-process figures come labelled by worker."""
    _, port, _, _ = workers
    before = scrape(port).get(("chorus_streams_total", ()), 0.0)
    held = [connect_to(port, want=0)[0], connect_to(port, want=1)[0], connect_to(port)[0]]
    for ws in held:
        ws.send(json.dumps(START))
        assert json.loads(ws.recv())["type"] == "ready"
    for _ in range(6):  # whichever worker the kernel picks, the fourth is refused
        with pytest.raises(InvalidStatus) as err:
            connect(url(port))
        assert err.value.response.status_code == 503
    for _ in range(4):
        m = scrape(port)
        assert m[("chorus_streams_total", ())] == before + 3
        assert m[("chorus_open_streams", ())] == 3
        assert {w for (name, labels) in m if name == "process_resident_memory_bytes"
                for k, w in labels if k == "worker"} == {"0", "1"}
    held.pop().close()
    deadline = time.monotonic() + 10
    while scrape(port)[("chorus_open_streams", ())] != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    again, _ = connect_to(port)  # a slot is free again
    again.send(json.dumps(START))
    assert json.loads(again.recv())["type"] == "ready"
    for ws in [*held, again]:
        ws.close()


def test_ws_stream_cut_on_one_worker_resumes_through_the_other(workers, speech) -> None:  # noqa: F811
    """The resume lands on the worker that does not hold the stream and is relayed to the one
    that does: the finals equal an uninterrupted run's (in order, none repeated, no audio lost
    or counted twice)."""
    _, port, _, _ = workers
    want, want_end = solo(port, speech)
    assert len(want) >= 3, want
    ws, a = connect_to(port)
    ws.send(json.dumps(START))
    ready = json.loads(ws.recv())
    token = ready["resume_token"]
    assert token.startswith(f"w{a}."), token
    half = (len(speech) // 2) // FRAME * FRAME
    for i in range(0, half, FRAME):
        ws.send(speech[i : i + FRAME])
    finals, acked = [], 0
    while True:  # what the owner sends back for the first half (results carry `acked`)
        try:
            msg = json.loads(ws.recv(timeout=2))
        except TimeoutError:
            break
        acked = max(acked, msg.get("acked", 0))
        finals += [msg] if msg["type"] == "final" else []
    assert 0 < acked <= half
    cut(ws)
    other, b = connect_to(port, avoid=a)
    assert b != a
    more, end = ws_run(other, {"type": "resume", "token": token, "offset": acked,
                                 "finals": len(finals)}, speech[acked:])
    finals += more
    assert [f["text"] for f in finals] == [f["text"] for f in want]
    assert [(f["start"], f["end"]) for f in finals] == [(f["start"], f["end"]) for f in want]
    assert [f["seq"] for f in finals] == list(range(len(want)))
    assert end["acked"] == len(speech) == want_end["acked"]


def test_grpc_stream_cut_on_one_worker_resumes_through_the_other(workers, speech) -> None:  # noqa: F811
    """As over WebSocket, for native gRPC: the resumed call reaches the other worker (its
    chorus-worker metadata), which relays it; same finals as an uninterrupted call."""
    from server.grpc_codegen import generated
    from tests.server.test_resume import grpc_config

    pb, pb_grpc = generated()
    _, _, grpc_port, _ = workers

    def call_on(first, pcm: bytes, *, avoid: int | None = None, cut_after: bool = False):
        """A call (its own TCP connection) whose worker is not `avoid`: (worker, finals,
        acked, token); `cut_after`: cancelled once its audio is taken, never half-closed."""
        for _ in range(64):
            ch = grpc.insecure_channel(f"127.0.0.1:{grpc_port}",
                                       options=[("grpc.use_local_subchannel_pool", 1)])
            go, over = threading.Event(), threading.Event()

            holder: dict = {}

            def requests(first=first, go=go, over=over, holder=holder):
                go.wait(30)
                if over.is_set():
                    return
                yield first
                for i in range(0, len(pcm), FRAME):
                    yield pb.StreamingRecognizeRequest(audio=pcm[i : i + FRAME])
                if cut_after:  # cut once the results are back, never half-closed
                    time.sleep(2.0)
                    holder["call"].cancel()
                    over.wait(30)

            call = holder["call"] = pb_grpc.AsrStub(ch).StreamingRecognize(requests())
            w = int(dict(call.initial_metadata())["chorus-worker"])
            if w == avoid:
                over.set()
                go.set()
                call.cancel()
                ch.close()
                continue
            go.set()
            finals, acked, token = [], 0, ""
            try:
                for resp in call:
                    token = token or resp.resume_token
                    acked = max(acked, resp.acked)
                    finals += [r for r in resp.results if r.is_final]
            except grpc.RpcError as e:
                assert cut_after and e.code() == grpc.StatusCode.CANCELLED, e
            finally:
                over.set()
                ch.close()
            return w, finals, acked, token
        raise AssertionError("64 calls, none to another worker")

    start = pb.StreamingRecognizeRequest(streaming_config=grpc_config(pb))
    _, want, _, _ = call_on(start, speech)
    half = (len(speech) // 2) // FRAME * FRAME
    a, finals, acked, token = call_on(start, speech[:half], cut_after=True)
    assert token.startswith(f"w{a}.") and 0 < acked <= half, (token, acked)
    resume = pb.StreamingRecognizeRequest(resume=pb.ResumeRequest(token=token, offset=acked,
                                                                  finals=len(finals)))
    b, more, acked, _ = call_on(resume, speech[acked:], avoid=a)
    finals += more
    assert b != a
    assert [f.text for f in finals] == [f.text for f in want]
    assert [(f.start, f.end) for f in finals] == [(f.start, f.end) for f in want]
    assert [f.seq for f in finals] == list(range(len(want)))
    assert acked == len(speech)


def test_sigterm_drains_every_worker(workers, speech) -> None:  # noqa: F811
    """Runs last (it stops the module's server): a stream on each worker, audio sent, then
    SIGTERM to the supervisor: each stream gets the final for its audio, then
    server_shutdown; the supervisor exits 0 after both workers."""
    from websockets.exceptions import ConnectionClosed

    proc, port, _, lines = workers
    conns = [connect_to(port, want=0)[0], connect_to(port, want=1)[0]]
    got: list[list[dict]] = [[], []]
    for ws in conns:
        ws.send(json.dumps({"type": "start", "continuous": False}))
        assert json.loads(ws.recv())["type"] == "ready"
        for i in range(0, len(speech), FRAME):
            ws.send(speech[i : i + FRAME])
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    for ws, msgs in zip(conns, got, strict=True):
        try:
            while True:
                msgs.append(json.loads(ws.recv(timeout=60)))
        except ConnectionClosed:
            pass
    assert proc.wait(60) == 0
    for msgs in got:
        kinds = [m["type"] for m in msgs]
        assert "final" in kinds and kinds[-1] == "error", kinds
        assert msgs[-1]["code"] == "server_shutdown"
        finals = [m for m in msgs if m["type"] == "final"]
        assert finals[-1]["audio_processed"] == pytest.approx(len(speech) / 32000, abs=0.01)
    assert any("chorus: stopped" in line for line in lines)


def test_workers_need_fixed_ports(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "clients.cli", "serve", "--workers", "2",
                          "--ws-port", "0", "--grpc-port", str(free_port())],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "workers > 1 need fixed ports: ws_port is 0" in out.stderr, out.stderr


def test_a_worker_that_cannot_start_stops_the_server_with_one_line(tmp_path: Path) -> None:
    """Each worker loads the bundle; a bad one stops `chorus serve --workers 2` with one
    `chorus serve:` line naming the problem (no traceback, no worker left behind)."""
    out = subprocess.run([sys.executable, "-m", "clients.cli", "serve", "--workers", "2",
                          "--bundle", str(tmp_path / "nothing-here"), "--ws-port",
                          str(free_port()), "--grpc-port", str(free_port())],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("chorus serve: "), out.stderr
    assert "nothing-here" in lines[0]
