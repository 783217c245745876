"""Batch Dispatch invariants: a stream's outputs do not depend on who it was batched with."""

from __future__ import annotations

import asyncio
import subprocess

import numpy as np
import pytest
import torch

from models.audio import load_audio
from models.backends import make_backend
from models.bundle import load
from models.decoding import bundle_decoder
from models.streaming import Chunker, StreamingTranscriber
from server.dispatch import DispatchConfig, Dispatcher, Frames, Overloaded, StreamError
from tests.models.test_cli import tiny_bundle

SENTENCES = ["turn on the lights", "what is the weather like in paris tomorrow",
             "call mom", "set a timer for twenty minutes please",
             "play some music", "the quick brown fox jumps over the lazy dog"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load(tiny_bundle(tmp_path_factory.mktemp("b") / "tiny"))


@pytest.fixture(scope="module")
def audios(tmp_path_factory):
    d = tmp_path_factory.mktemp("wav")
    out = []
    for i, text in enumerate(SENTENCES):
        subprocess.run(["espeak-ng", "-v", f"en-us+m{i + 1}", "-w", str(d / f"{i}.wav"), text],
                       check=True)
        out.append(load_audio(d / f"{i}.wav", sample_rate=16_000))
    return out


def alone(bundle, audio) -> tuple[list[np.ndarray], str]:
    """The single-stream reference: StreamingTranscriber's own model steps."""
    outs: list[np.ndarray] = []
    t = StreamingTranscriber(bundle)
    run = t._run

    def spy(frames: torch.Tensor) -> None:
        with torch.no_grad():
            out, _ = bundle.model.step(frames[None], t.state)
        outs.append(out[0].numpy())
        run(frames)

    t._run = spy  # type: ignore[method-assign]
    t.accept_waveform(audio)
    return outs, t.finalize().text


def assert_same(refs: list, results: list) -> None:
    """Each stream's chunk outputs and text equal its single-stream reference."""
    for (ref_outs, ref_text), (outs, text) in zip(refs, results, strict=True):
        assert len(outs) == len(ref_outs)
        assert max(float(np.abs(a - b).max()) for a, b in zip(outs, ref_outs, strict=True)) < 1e-4
        assert text == ref_text


class RecordingStream:
    """The single-stream path's parts (Chunker, greedy decoder) with the model step through
    the dispatcher, keeping every chunk's outputs to compare with the reference above."""

    def __init__(self, bundle, dispatcher: Dispatcher, *, deferred: bool = False):
        self.dispatcher = dispatcher
        self.chunker = Chunker(bundle, deferred=deferred)
        self.decoder = bundle_decoder(bundle, None)  # the bundle's, as the reference
        self.sid = dispatcher.open_stream()
        self.outs: list[np.ndarray] = []

    async def _run(self, chunks: list[torch.Tensor]) -> None:
        for frames in chunks:
            out = await self.dispatcher.step(self.sid, frames.numpy())
            self.outs.append(out)
            self.decoder.update(torch.from_numpy(out))

    async def accept_waveform(self, samples: np.ndarray) -> None:
        chunks = self.chunker.accept(samples)
        if self.chunker.deferred:  # the chunks' samples: the dispatcher computes features
            rows = self.chunker.chunk + self.chunker.lookahead
            for span in chunks:
                out = await self.dispatcher.step(self.sid, Frames(span.numpy(), rows))
                self.outs.append(out)
                self.decoder.update(torch.from_numpy(out))
            return
        await self._run(chunks)

    async def finalize(self):
        await self._run(self.chunker.finish())
        self.dispatcher.close_stream(self.sid)
        return self.decoder.finalize()


async def feed(stream: RecordingStream, audio: np.ndarray, seed: int) -> tuple[list, str]:
    rng = np.random.default_rng(seed)
    stream.outs = []
    pos = 0
    while pos < audio.size:
        n = int(rng.integers(400, 6000))
        await stream.accept_waveform(audio[pos : pos + n])
        pos += n
        await asyncio.sleep(0)
    return stream.outs, (await stream.finalize()).text


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
@pytest.mark.parametrize("policy", ["eager", "timeout", "none"])
def test_stream_outputs_identical_alone_or_batched(bundle, audios, backend, policy) -> None:
    refs = [alone(bundle, a) for a in audios]

    async def main() -> tuple[list, dict]:
        be = make_backend(backend, bundle)
        async with Dispatcher(be, DispatchConfig(policy=policy, max_wait_ms=5)) as disp:
            streams = [RecordingStream(bundle, disp) for _ in audios]
            results = await asyncio.gather(*(feed(s, a, i) for i, (s, a) in
                                             enumerate(zip(streams, audios, strict=True))))
            assert disp.active_streams == 0
            return results, disp.metrics.summary()

    results, metrics = asyncio.run(main())
    assert_same(refs, results)
    if policy == "none":
        assert set(metrics["batch_sizes"]) == {1}
    else:
        assert metrics["mean_batch"] > 1.5, metrics
    assert metrics["failed_chunks"] == 0 and metrics["chunks"] == sum(len(r[0]) for r in refs)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_features_computed_in_the_dispatch_batch_equal_each_streams_own(bundle, audios,
                                                                      backend) -> None:
    """Deferred features (the server's path): chunks go to the dispatcher as the samples of
    their frames, and their log-mel features are computed there for the whole batch at once
    (App._featurize, the server's hook); every stream's outputs and text equal the
    single-stream reference (features computed per stream)."""
    from server.app import App, ServerConfig

    refs = [alone(bundle, a) for a in audios]
    app = App(ServerConfig(), bundle=bundle)
    sizes: list[int] = []

    def featurize(chunks: list) -> list:
        sizes.append(len(chunks))
        return app._featurize(chunks)

    async def main() -> tuple[list, dict]:
        be = make_backend(backend, bundle)
        async with Dispatcher(be, DispatchConfig(policy="eager"), featurize=featurize) as disp:
            streams = [RecordingStream(bundle, disp, deferred=True) for _ in audios]
            assert all(s.chunker.deferred for s in streams)
            results = await asyncio.gather(*(feed(s, a, i) for i, (s, a) in
                                             enumerate(zip(streams, audios, strict=True))))
            return results, disp.metrics.summary()

    results, metrics = asyncio.run(main())
    assert_same(refs, results)
    assert max(sizes) > 1  # several streams' chunks in one featurize call
    assert metrics["failed_chunks"] == 0


def test_deferred_chunker_frames_make_the_same_features(bundle, audios) -> None:
    """Chunker(deferred=True) gives each chunk's samples, whose Fbank.features(Fbank.frame())
    equal the features of the plain Chunker, chunk by chunk, for random chunkings (1 sample
    to 5000 at a time); finish() gives features."""
    from models.features import Fbank

    fbank = Fbank(bundle.features)
    for seed, audio in enumerate(audios):
        rng = np.random.default_rng(seed)
        plain, deferred = Chunker(bundle), Chunker(bundle, deferred=True)
        pos, got, want = 0, [], []
        while pos < audio.size:
            n = int(rng.integers(1, 5000))
            want += plain.accept(audio[pos : pos + n])
            got += [fbank.features(fbank.frame(s)) for s in deferred.accept(audio[pos : pos + n])]
            pos += n
        want += plain.finish()
        got += deferred.finish()
        assert len(got) == len(want) > 0
        for a, b in zip(got, want, strict=True):
            assert a.shape == b.shape and float((a - b).abs().max()) < 1e-5


class PoisonOnNaN:
    """A real backend that refuses NaN input, to fail one batch on purpose."""

    def __init__(self, inner):
        self.inner = inner
        self.state_names = inner.state_names

    def init_state(self, batch):
        return self.inner.init_state(batch)

    def step(self, inputs):
        if np.isnan(inputs["features"]).any():
            raise ValueError("features contain NaN")
        return self.inner.step(inputs)


def test_failing_batch_fails_only_its_streams(bundle) -> None:
    chunk = Chunker(bundle).chunk + bundle.model.lookahead_frames
    good = np.tile(bundle.model.encoder.pad_frame.numpy(), (chunk, 1))
    bad = np.full_like(good, np.nan)

    async def main() -> None:
        disp = Dispatcher(PoisonOnNaN(make_backend("torch", bundle)), DispatchConfig(policy="none"))
        async with disp:
            a, b = disp.open_stream(), disp.open_stream()
            ra, rb = await asyncio.gather(disp.step(a, bad), disp.step(b, good),
                                          return_exceptions=True)
            assert isinstance(ra, StreamError) and "features contain NaN" in str(ra)
            assert isinstance(rb, np.ndarray) and rb.shape == (chunk // 4 - 2, 29)
            # the failed stream's state is untouched and both streams keep working
            assert (await disp.step(a, good)).shape == rb.shape
            assert disp.metrics.failed_chunks == 1 and disp.metrics.chunks == 2

    asyncio.run(main())


def test_admission_control_and_protocol_errors(bundle) -> None:
    chunk = Chunker(bundle).chunk + bundle.model.lookahead_frames
    x = np.tile(bundle.model.encoder.pad_frame.numpy(), (chunk, 1))

    async def main() -> None:
        async with Dispatcher(make_backend("torch", bundle), DispatchConfig(max_streams=2)) as disp:
            a = disp.open_stream()
            disp.open_stream()
            with pytest.raises(Overloaded, match="max_streams=2"):
                disp.open_stream()
            assert disp.metrics.refused == 1
            disp.close_stream(a)
            c = disp.open_stream()
            first = asyncio.ensure_future(disp.step(c, x))
            await asyncio.sleep(0)
            with pytest.raises(StreamError, match="already has a chunk in flight"):
                await disp.step(c, x)
            await first
            with pytest.raises(StreamError, match="unknown or closed stream"):
                await disp.step(a, x)

    asyncio.run(main())
    with pytest.raises(ValueError, match="policy must be one of"):
        DispatchConfig(policy="lazy")  # type: ignore[arg-type]


def test_bench_dispatch_cli_writes_json_table_and_plot(bundle, tmp_path) -> None:
    import json
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "clients.cli", "bench", "dispatch", "--bundle", str(bundle.path),
         "--streams", "1,3", "--policy", "eager,none", "--backend", "onnxruntime",
         "--seconds", "1.5", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "dispatch.json").read_text())
    assert [(x["policy"], x["streams"]) for x in r["rows"]] == [("eager", 1), ("eager", 3),
                                                                ("none", 1), ("none", 3)]
    assert all(x["errors"] == 0 and x["chunks"] > 0 and x["p99_ms"] > 0 for x in r["rows"])
    # the server's streams, at the bundle's chunk: the session's both sides were timed
    assert r["config"]["chunk_ms"] == bundle.decoding.chunk_frames * 10
    assert all(x["ms_per_chunk"]["features"] > 0 and x["ms_per_chunk"]["decode"] > 0
               for x in r["rows"])
    assert r["matmul_peak_gflops"] > 1 and r["model_mflops_per_audio_second"] > 0
    assert (tmp_path / "dispatch.png").stat().st_size > 1000
    assert "| capacity (eager) |" in (tmp_path / "dispatch.md").read_text().replace("| backend ", "")


def test_bench_dispatch_repeats_give_the_median_run_and_its_spread(bundle, tmp_path) -> None:
    """`--repeats 3`: each point runs three times; the row's p99 is the runs' median, with
    their min / max beside it (as `loadtest capacity`)."""
    import json
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "clients.cli", "bench", "dispatch", "--bundle", str(bundle.path),
         "--streams", "2", "--policy", "eager", "--backend", "onnxruntime", "--repeats", "3",
         "--seconds", "1", "--out", str(tmp_path), "--stem", "rep"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads((tmp_path / "rep.json").read_text())["rows"]
    runs = row["runs"]
    assert len(runs) == 3 and all(r["chunks"] > 0 for r in runs)
    p99s = sorted(r["p99_ms"] for r in runs)
    assert row["p99_ms"] == round(p99s[1], 2)
    assert (row["p99_ms_min"], row["p99_ms_max"]) == (round(p99s[0], 2), round(p99s[2], 2))
    assert row["chunks"] == sum(r["chunks"] for r in runs)
    assert "p99 ms (min-max)" in (tmp_path / "rep.md").read_text()


def test_bench_dispatch_runs_torch_in_int8_beside_fp32(bundle, tmp_path) -> None:
    """`--backend torch,torch+int8`: one row each, the int8 one through the server's own path
    with ServerConfig(int8=True); an unknown precision suffix is named before anything runs."""
    import json
    import sys

    cmd = [sys.executable, "-m", "clients.cli", "bench", "dispatch", "--bundle", str(bundle.path),
           "--streams", "2", "--policy", "eager", "--seconds", "1", "--out", str(tmp_path)]
    proc = subprocess.run([*cmd, "--backend", "torch,torch+int8"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "dispatch.json").read_text())["rows"]
    assert [r["backend"] for r in rows] == ["torch", "torch+int8"]
    assert all(r["errors"] == 0 and r["chunks"] > 0 for r in rows)
    bad = subprocess.run([*cmd, "--backend", "torch+fp16"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode != 0 and "only precision suffix is '+int8'" in bad.stderr
    assert "[bench]" not in bad.stdout


def test_merged_runs_take_the_median_sum_the_counts_and_average_the_breakdown() -> None:
    """The row of a repeated point (what `ok` is then judged on): median p99 of the runs, not
    the worst or the first; errors and chunks summed; the time breakdown averaged."""
    from loadtest.dispatch_bench import SPREAD_KEYS, _merge_runs

    def run(p99: float, errors: int, step_ms: float) -> dict:
        return {**dict.fromkeys(SPREAD_KEYS, 1.0), "p99_ms": p99, "errors": errors,
                "error_examples": ["e"] * errors, "chunks": 10, "rtf": 0.01,
                "ms_per_chunk": {"features": 0.1, "decode": 0.0, "model_step": step_ms,
                                 "dispatch_wait": 0.0}}

    row = _merge_runs([run(300.0, 0, 4.0), run(100.0, 1, 2.0), run(200.0, 0, 6.0)])
    assert (row["p99_ms"], row["p99_ms_min"], row["p99_ms_max"]) == (200.0, 100.0, 300.0)
    assert row["errors"] == 1 and row["chunks"] == 30 and len(row["runs"]) == 3
    assert row["ms_per_chunk"]["model_step"] == 4.0
    one = run(300.0, 0, 4.0)
    assert _merge_runs([one]) is one  # a single run is its own row, unchanged


class CloseDuringStep:
    """A real backend that, inside its first step, has the event loop close one stream (what a
    client that goes away does while a batch computes) and waits until it is closed."""

    def __init__(self, inner, loop: asyncio.AbstractEventLoop):
        self.inner = inner
        self.state_names = inner.state_names
        self.loop = loop
        self.disp: Dispatcher | None = None
        self.victim: int | None = None
        self.steps: list[int] = []  # batch size of each step

    def init_state(self, batch):
        return self.inner.init_state(batch)

    def step(self, inputs):
        import threading

        if self.victim is not None:
            closed = threading.Event()
            disp, sid = self.disp, self.victim
            assert disp is not None

            def close() -> None:
                disp.close_stream(sid)
                closed.set()

            self.loop.call_soon_threadsafe(close)
            assert closed.wait(10)
            self.victim = None
        self.steps.append(inputs["features"].shape[0])
        return self.inner.step(inputs)


def test_a_stream_closed_during_a_group_never_fails_another_group(bundle) -> None:
    """One batch, two groups of unequal chunk length: a stream of group 2 closes while group 1
    computes. Group 2's other chunk completes (== its solo step); the closed one gets a
    StreamError instead of hanging; nothing counts as failed."""
    chunk = Chunker(bundle).chunk + bundle.model.lookahead_frames
    rng = np.random.default_rng(0)
    long_x = rng.standard_normal((chunk, bundle.features.num_mel_bins)).astype(np.float32)
    short_x = long_x[: chunk - Chunker(bundle).chunk // 2]

    async def solo(x: np.ndarray) -> np.ndarray:
        async with Dispatcher(make_backend("torch", bundle)) as disp:
            return await disp.step(disp.open_stream(), x)

    async def main() -> None:
        want = await solo(short_x)
        be = CloseDuringStep(make_backend("torch", bundle), asyncio.get_running_loop())
        # the timeout policy with max_batch 3 collects all three chunks into one batch
        disp = Dispatcher(be, DispatchConfig(policy="timeout", max_batch=3, max_wait_ms=5000))
        async with disp:
            a, b, c = disp.open_stream(), disp.open_stream(), disp.open_stream()
            be.disp, be.victim = disp, c
            ra, rb, rc = await asyncio.wait_for(asyncio.gather(
                disp.step(a, long_x), disp.step(b, short_x), disp.step(c, short_x),
                return_exceptions=True), 30)
            assert isinstance(ra, np.ndarray), ra
            assert isinstance(rb, np.ndarray), rb
            assert np.abs(rb - want).max() < 1e-5
            assert isinstance(rc, StreamError) and "closed" in str(rc), rc
            assert be.steps == [1, 1]  # group 2 ran without the closed stream
            assert disp.metrics.failed_chunks == 0 and disp.metrics.chunks == 2
            assert (await disp.step(b, long_x)).shape == ra.shape  # b goes on

    asyncio.run(main())


def test_a_failing_chunk_in_a_batch_fails_only_itself(bundle) -> None:
    """The backend fails a batch because of one stream's chunk: the batch is retried chunk by
    chunk, so only that chunk fails and the others equal their solo steps."""
    chunk = Chunker(bundle).chunk + bundle.model.lookahead_frames
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((chunk, bundle.features.num_mel_bins)).astype(np.float32)
          for _ in range(3)]
    bad = np.full_like(xs[0], np.nan)

    async def main() -> None:
        async with Dispatcher(make_backend("torch", bundle)) as ref:
            want = [await ref.step(ref.open_stream(), x) for x in xs]
        disp = Dispatcher(PoisonOnNaN(make_backend("torch", bundle)),
                          DispatchConfig(policy="timeout", max_batch=4, max_wait_ms=5000))
        async with disp:
            sids = [disp.open_stream() for _ in range(4)]
            got = await asyncio.gather(*(disp.step(s, x) for s, x in zip(sids, [*xs, bad],
                                                                         strict=True)),
                                       return_exceptions=True)
            for g, w in zip(got[:3], want, strict=True):
                assert isinstance(g, np.ndarray), g
                assert np.abs(g - w).max() < 1e-5
            assert isinstance(got[3], StreamError) and "features contain NaN" in str(got[3])
            assert disp.metrics.failed_chunks == 1 and disp.metrics.chunks == 3

    asyncio.run(main())
