"""gRPC on a real server: native API, the unmodified Riva client, health and reflection."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import numpy as np
import pytest

from models.audio import load_audio
from models.bundle import load
from models.streaming import StreamingTranscriber
from tests.models.test_cli import tiny_bundle
from tests.server.conftest import SlowSteps, running_server


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load(tiny_bundle(tmp_path_factory.mktemp("b") / "tiny"))


@pytest.fixture(scope="module")
def wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("w") / "a.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), "open the garage door"], check=True)
    return path  # 22.05 kHz PCM16 WAV


def offline(bundle, wav: Path) -> str:
    t = StreamingTranscriber(bundle)
    t.accept_waveform(load_audio(wav, sample_rate=16_000))
    return t.finalize().text


def test_riva_client_offline_and_streaming(bundle, wav) -> None:
    import riva.client

    want = offline(bundle, wav)
    with running_server(bundle) as app:
        auth = riva.client.Auth(uri=f"127.0.0.1:{app.cfg.grpc_port}")
        asr = riva.client.ASRService(auth)
        # offline, the way Riva's transcribe_file_offline script does it: the file's bytes
        config = riva.client.RecognitionConfig(language_code="en-US", max_alternatives=1,
                                               enable_word_time_offsets=True)
        riva.client.add_audio_file_specs_to_config(config, wav)
        resp = asr.offline_recognize(wav.read_bytes(), config)
        text = " ".join(r.alternatives[0].transcript for r in resp.results)
        assert text == want
        if resp.results:
            assert all(w.end_time >= w.start_time >= 0 for w in resp.results[0].alternatives[0].words)
        # streaming, the way its transcribe_file script does it: file chunks, header included
        sconfig = riva.client.StreamingRecognitionConfig(
            config=riva.client.RecognitionConfig(language_code="", max_alternatives=1,
                                                 encoding=riva.client.AudioEncoding.LINEAR_PCM),
            interim_results=True)
        riva.client.add_audio_file_specs_to_config(sconfig, wav)
        with riva.client.AudioChunkFileIterator(wav, 1600) as chunks:
            finals = [r.alternatives[0].transcript
                      for resp in asr.streaming_response_generator(chunks, sconfig)
                      for r in resp.results if r.is_final]
        assert " ".join(f for f in finals if f) == want
        cfg = asr.stub.GetRivaSpeechRecognitionConfig(
            riva.client.proto.riva_asr_pb2.RivaSpeechRecognitionConfigRequest())
        kinds = {c.parameters["type"] for c in cfg.model_config}
        assert kinds == {"online", "offline"}


def test_riva_transcribe_file_script_flow(bundle, wav, capsys) -> None:
    """What Riva's scripts/asr/transcribe_file.py does (the script is not in the PyPI package,
    so its steps are replayed with the package's own helpers): its argparse and defaults, a
    config with no encoding and no sample rate (the WAV header travels with the audio), word
    boosting, diarization off, endpoint defaults, 1600-frame file chunks, print_streaming."""
    import argparse

    import riva.client
    from riva.client.argparse_utils import (
        add_asr_config_argparse_parameters,
        add_connection_argparse_parameters,
    )

    want = offline(bundle, wav)
    with running_server(bundle) as app:
        parser = argparse.ArgumentParser()
        parser.add_argument("--input-file")
        parser.add_argument("--file-streaming-chunk", type=int, default=1600)
        parser = add_connection_argparse_parameters(parser)
        parser = add_asr_config_argparse_parameters(parser, max_alternatives=True,
                                                    profanity_filter=True, word_time_offsets=True)
        args = parser.parse_args(["--input-file", str(wav), "--server",
                                  f"127.0.0.1:{app.cfg.grpc_port}", "--word-time-offsets"])
        auth = riva.client.Auth(ssl_root_cert=args.ssl_root_cert, use_ssl=args.use_ssl,
                                uri=args.server, metadata_args=args.metadata)
        asr = riva.client.ASRService(auth)
        config = riva.client.StreamingRecognitionConfig(
            config=riva.client.RecognitionConfig(
                language_code=args.language_code, model=args.model_name, max_alternatives=1,
                profanity_filter=args.profanity_filter,
                enable_automatic_punctuation=args.automatic_punctuation,
                verbatim_transcripts=not args.no_verbatim_transcripts,
                enable_word_time_offsets=args.word_time_offsets),
            interim_results=True)
        assert config.config.encoding == 0 and config.config.sample_rate_hertz == 0
        riva.client.add_word_boosting_to_config(config, args.boosted_lm_words,
                                                args.boosted_lm_score)
        riva.client.add_speaker_diarization_to_config(config, args.speaker_diarization,
                                                      args.diarization_max_speakers)
        riva.client.add_endpoint_parameters_to_config(
            config, args.start_history, args.start_threshold, args.stop_history,
            args.stop_history_eou, args.stop_threshold, args.stop_threshold_eou)
        riva.client.add_custom_configuration_to_config(config, args.custom_configuration)
        capsys.readouterr()
        with riva.client.AudioChunkFileIterator(args.input_file, args.file_streaming_chunk,
                                                None) as chunks:
            riva.client.print_streaming(
                responses=asr.streaming_response_generator(audio_chunks=chunks,
                                                           streaming_config=config),
                show_intermediate=False, additional_info="time", word_time_offsets=True)
    printed = capsys.readouterr().out
    assert want and f"Transcript 0: {want}\n" in printed, printed  # the final, as the script prints it


def test_riva_errors(bundle, wav) -> None:
    import riva.client

    with running_server(bundle, api_keys=("k1",)) as app:
        uri = f"127.0.0.1:{app.cfg.grpc_port}"
        config = riva.client.RecognitionConfig(encoding=riva.client.AudioEncoding.LINEAR_PCM,
                                               sample_rate_hertz=16000)
        pcm = (np.zeros(1600)).astype("<i2").tobytes()
        with pytest.raises(grpc.RpcError) as e:
            riva.client.ASRService(riva.client.Auth(uri=uri)).offline_recognize(pcm, config)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        asr = riva.client.ASRService(riva.client.Auth(uri=uri, metadata_args=[["x-api-key", "k1"]]))
        asr.offline_recognize(pcm, config)
        for bad, msg in [(dict(sample_rate_hertz=0), "sample_rate must be between"),
                         (dict(sample_rate_hertz=16000, language_code="de-DE"), "not served"),
                         (dict(sample_rate_hertz=16000, encoding=riva.client.AudioEncoding.FLAC),
                          "encoding FLAC is not supported")]:
            cfg = riva.client.RecognitionConfig(**{"encoding": riva.client.AudioEncoding.LINEAR_PCM,
                                                   **bad})
            with pytest.raises(grpc.RpcError) as e:
                asr.offline_recognize(pcm, cfg)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and msg in e.value.details()


def test_riva_features_we_do_not_have_are_named_in_trailing_metadata(bundle, wav) -> None:
    """Riva's automatic punctuation, profanity filter and speaker diarization are not done
    here; a call that asks for them gets its transcript (unpunctuated, unfiltered) and the
    trailing metadata `chorus-ignored` naming each requested one, unary and streaming; a
    call that asks for none gets no such entry."""
    import riva.client
    from riva.client.proto import riva_asr_pb2 as rasr

    want = offline(bundle, wav)
    asked = dict(enable_automatic_punctuation=True, profanity_filter=True,
                 diarization_config=rasr.SpeakerDiarizationConfig(enable_speaker_diarization=True))
    names = "enable_automatic_punctuation,profanity_filter,enable_speaker_diarization"
    with running_server(bundle) as app:
        asr = riva.client.ASRService(riva.client.Auth(uri=f"127.0.0.1:{app.cfg.grpc_port}"))
        for extra, ignored in ((asked, names), ({}, None)):
            cfg = rasr.RecognitionConfig(language_code="en-US", max_alternatives=1, **extra)
            resp, call = asr.stub.Recognize.with_call(
                rasr.RecognizeRequest(config=cfg, audio=wav.read_bytes()))
            assert " ".join(r.alternatives[0].transcript for r in resp.results) == want
            assert dict(call.trailing_metadata()).get("chorus-ignored") == ignored

            def requests(cfg=cfg):
                yield rasr.StreamingRecognizeRequest(
                    streaming_config=rasr.StreamingRecognitionConfig(config=cfg))
                data = wav.read_bytes()
                for i in range(0, len(data), 4000):
                    yield rasr.StreamingRecognizeRequest(audio_content=data[i : i + 4000])

            call = asr.stub.StreamingRecognize(requests())
            finals = [r.alternatives[0].transcript for resp in call for r in resp.results
                      if r.is_final]
            assert " ".join(f for f in finals if f) == want
            assert dict(call.trailing_metadata()).get("chorus-ignored") == ignored


def test_native_unary_streaming_batch(bundle, wav) -> None:
    from server.grpc_codegen import generated

    pb, pb_grpc = generated()
    want = offline(bundle, wav)
    data = wav.read_bytes()
    with running_server(bundle) as app:
        with grpc.insecure_channel(f"127.0.0.1:{app.cfg.grpc_port}") as ch:
            stub = pb_grpc.AsrStub(ch)
            cfg = pb.RecognitionConfig(format=pb.AudioFormat(encoding=pb.WAV))
            assert stub.Recognize(pb.RecognizeRequest(config=cfg, audio=data)).text == want

            def requests():
                yield pb.StreamingRecognizeRequest(streaming_config=pb.StreamingConfig(
                    config=cfg, interim_results=True, continuous=False))
                for i in range(0, len(data), 4000):
                    yield pb.StreamingRecognizeRequest(audio=data[i : i + 4000])

            results = [r for resp in stub.StreamingRecognize(requests()) for r in resp.results]
            assert [r.text for r in results if r.is_final] == [want]
            items = [pb.BatchItem(id=f"f{i}", audio=data) for i in range(3)]
            items.append(pb.BatchItem(id="bad", audio=b"RIFF????WAVEjunk"))
            out = {r.id: r for r in stub.BatchRecognize(pb.BatchRecognizeRequest(config=cfg,
                                                                                 items=items))}
            assert {k: v.response.text for k, v in out.items() if k != "bad"} == \
                {"f0": want, "f1": want, "f2": want}
            assert out["bad"].error


def test_native_streaming_defaults_are_the_websockets(bundle, wav) -> None:
    """A native StreamingConfig that sets neither interim_results nor continuous gets what a
    WebSocket `start` with neither gets: partials, and a final per utterance (endpointing).
    The same PCM16 (two sentences with a pause) in the same pieces gives the same results in
    order over both protocols; interim_results=false / continuous=false given explicitly
    still turn them off."""
    import json

    from websockets.sync.client import connect

    from models.audio import to_pcm16
    from server.grpc_codegen import generated

    pb, pb_grpc = generated()
    speech = load_audio(wav, sample_rate=16_000)
    pcm = to_pcm16(np.concatenate([speech, np.zeros(32_000, np.float32), speech]))
    pieces = [pcm[i : i + 3200] for i in range(0, len(pcm), 3200)]
    cfg = pb.RecognitionConfig(format=pb.AudioFormat(encoding=pb.PCM_S16LE,
                                                     sample_rate_hertz=16_000))

    def native(stub, sc) -> list[tuple[bool, str]]:
        def requests():
            yield pb.StreamingRecognizeRequest(streaming_config=sc)
            for p in pieces:
                yield pb.StreamingRecognizeRequest(audio=p)

        return [(r.is_final, r.text) for resp in stub.StreamingRecognize(requests())
                for r in resp.results]

    with running_server(bundle) as app:
        with connect(f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream") as ws:
            ws.send(json.dumps({"type": "start"}))
            assert json.loads(ws.recv())["type"] == "ready"
            for p in pieces:
                ws.send(p)
            ws.send(json.dumps({"type": "stop"}))
            msgs = [json.loads(m) for m in ws]
        over_ws = [(m["type"] == "final", m["text"]) for m in msgs
                   if m["type"] in ("partial", "final")]
        with grpc.insecure_channel(f"127.0.0.1:{app.cfg.grpc_port}") as ch:
            stub = pb_grpc.AsrStub(ch)
            defaults = native(stub, pb.StreamingConfig(config=cfg))
            off = native(stub, pb.StreamingConfig(config=cfg, interim_results=False,
                                                  continuous=False))
    assert any(not final for final, _ in over_ws) and defaults == over_ws
    assert [final for final, _ in off] == [True]


def test_native_results_carry_the_servers_processing_latency(bundle, wav) -> None:
    """Native results (partials, finals, unary) say how long the server took to make them:
    each model step takes 50 ms more here."""
    from server.grpc_codegen import generated

    pb, pb_grpc = generated()
    data = wav.read_bytes()
    cfg = pb.RecognitionConfig(format=pb.AudioFormat(encoding=pb.WAV))

    def requests():
        yield pb.StreamingRecognizeRequest(streaming_config=pb.StreamingConfig(
            config=cfg, interim_results=True, continuous=False))
        for i in range(0, len(data), 4000):
            yield pb.StreamingRecognizeRequest(audio=data[i : i + 4000])

    with running_server(bundle, wrap_backend=lambda b: SlowSteps(b, 0.05)) as app:
        with grpc.insecure_channel(f"127.0.0.1:{app.cfg.grpc_port}") as ch:
            stub = pb_grpc.AsrStub(ch)
            results = [r for resp in stub.StreamingRecognize(requests()) for r in resp.results]
            unary = stub.Recognize(pb.RecognizeRequest(config=cfg, audio=data)).results
    assert any(not r.is_final for r in results) and results[-1].is_final and unary
    took = [r.processing_latency_ms for r in [*results, *unary]]
    assert all(50 <= ms < 5000 for ms in took), took


def test_health_and_reflection(bundle) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with running_server(bundle, api_keys=("k",)) as app:  # open without a key
        with grpc.insecure_channel(f"127.0.0.1:{app.cfg.grpc_port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)
            for service in ("", "chorus.asr.v1.Asr", "nvidia.riva.asr.RivaSpeechRecognition"):
                resp = health.Check(health_pb2.HealthCheckRequest(service=service))
                assert resp.status == health_pb2.HealthCheckResponse.SERVING
            refl = reflection_pb2_grpc.ServerReflectionStub(ch)
            resp = next(refl.ServerReflectionInfo(iter([
                reflection_pb2.ServerReflectionRequest(list_services="")])))
            names = {s.name for s in resp.list_services_response.service}
            assert {"chorus.asr.v1.Asr", "nvidia.riva.asr.RivaSpeechRecognition",
                    "grpc.health.v1.Health"} <= names


def test_over_capacity_is_resource_exhausted(bundle, wav) -> None:
    import json

    import riva.client
    from websockets.sync.client import connect

    with running_server(bundle, max_streams=1) as app:
        with connect(f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream") as ws:
            ws.send(json.dumps({"type": "start"}))
            assert json.loads(ws.recv())["type"] == "ready"  # the one stream is taken
            asr = riva.client.ASRService(riva.client.Auth(uri=f"127.0.0.1:{app.cfg.grpc_port}"))
            with pytest.raises(grpc.RpcError) as e:
                asr.offline_recognize(wav.read_bytes(), riva.client.RecognitionConfig())
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "retry" in e.value.details()


class BrokenOpen:
    """A real backend whose stream set-up fails with a ValueError while `broken`: a server
    bug, not a client error."""

    def __init__(self, inner):
        self.inner = inner
        self.state_names = inner.state_names
        self.broken = True

    def init_state(self, batch):
        if self.broken:
            raise ValueError("simulated server bug")
        return self.inner.init_state(batch)

    def step(self, inputs):
        return self.inner.step(inputs)


def test_only_client_errors_are_invalid_argument(bundle, wav, caplog) -> None:
    """Bad requests are INVALID_ARGUMENT with a message naming what was expected; a server
    bug (even a ValueError) is INTERNAL and logged with its traceback; the server goes on."""
    import logging

    from server.grpc_codegen import generated

    pb, pb_grpc = generated()
    backends: list[BrokenOpen] = []

    def wrap(inner):
        backends.append(BrokenOpen(inner))
        return backends[-1]

    cfg = pb.RecognitionConfig(format=pb.AudioFormat(encoding=pb.WAV))
    with running_server(bundle, wrap_backend=wrap) as app:
        with grpc.insecure_channel(f"127.0.0.1:{app.cfg.grpc_port}") as ch:
            stub = pb_grpc.AsrStub(ch)
            with caplog.at_level(logging.ERROR), pytest.raises(grpc.RpcError) as e:
                stub.Recognize(pb.RecognizeRequest(config=cfg, audio=wav.read_bytes()))
            assert e.value.code() == grpc.StatusCode.INTERNAL, e.value
            assert "simulated server bug" in e.value.details()
            assert any(r.exc_info and "simulated server bug" in str(r.exc_info[1])
                       for r in caplog.records), caplog.records
            backends[0].broken = False
            assert stub.Recognize(pb.RecognizeRequest(config=cfg, audio=wav.read_bytes())).text \
                == offline(bundle, wav)
            audio = pb.StreamingRecognizeRequest(audio=b"\x00\x00")
            start = pb.StreamingRecognizeRequest(streaming_config=pb.StreamingConfig(config=cfg))
            for reqs, msg in [([audio], "first request must carry streaming_config"),
                              ([start, start], "streaming_config sent twice")]:
                with pytest.raises(grpc.RpcError) as e:
                    list(stub.StreamingRecognize(iter(reqs)))
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
                assert msg in e.value.details()


def test_cancelled_streams_leave_no_task_errors_in_the_log(bundle, caplog) -> None:
    """A client that cancels its streaming call (native and Riva) mid-stream: the server's
    stream closes (the native one when its resume window passes) and nothing like "Task
    exception was never retrieved" reaches the log."""
    import gc
    import logging
    import threading
    import time

    import riva.client

    from server.grpc_codegen import generated

    pb, pb_grpc = generated()
    rasr = riva.client.proto.riva_asr_pb2
    pcm = b"\x00\x00" * 1600
    with caplog.at_level(logging.INFO), running_server(bundle, resume_window_s=0.3) as app:
        with grpc.insecure_channel(f"127.0.0.1:{app.cfg.grpc_port}") as ch:
            native = pb_grpc.AsrStub(ch)
            riva_stub = riva.client.proto.riva_asr_pb2_grpc.RivaSpeechRecognitionStub(ch)
            for call in ("native", "riva"):
                hold = threading.Event()

                def requests(call=call, hold=hold):
                    if call == "native":
                        yield pb.StreamingRecognizeRequest(streaming_config=pb.StreamingConfig(
                            config=pb.RecognitionConfig(format=pb.AudioFormat(
                                encoding=pb.PCM_S16LE, sample_rate_hertz=16000))))
                        yield pb.StreamingRecognizeRequest(audio=pcm)
                    else:
                        yield rasr.StreamingRecognizeRequest(
                            streaming_config=rasr.StreamingRecognitionConfig(
                                config=rasr.RecognitionConfig(encoding=1, sample_rate_hertz=16000)))
                        yield rasr.StreamingRecognizeRequest(audio_content=pcm)
                    hold.wait(30)

                responses = (native if call == "native" else riva_stub).StreamingRecognize(requests())
                deadline = time.monotonic() + 10
                while app.dispatcher.active_streams == 0 and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert app.dispatcher.active_streams == 1
                responses.cancel()
                hold.set()
                deadline = time.monotonic() + 10
                while app.dispatcher.active_streams and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert app.dispatcher.active_streams == 0, call
        app.loop.call_soon_threadsafe(gc.collect)  # unreferenced tasks report when collected
        time.sleep(0.3)
    noise = [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]
    assert not noise, noise


def quiet_stream_requests(call: str, audio: bytes, hold):
    """A streaming call's requests that send config and audio, then go quiet (no half-close)."""
    import riva.client

    from server.grpc_codegen import generated

    pb, _ = generated()
    rasr = riva.client.proto.riva_asr_pb2
    if call == "native":
        yield pb.StreamingRecognizeRequest(streaming_config=pb.StreamingConfig(
            config=pb.RecognitionConfig(format=pb.AudioFormat(encoding=pb.PCM_S16LE,
                                                              sample_rate_hertz=16000)),
            continuous=False))
        yield pb.StreamingRecognizeRequest(audio=audio)
    else:
        yield rasr.StreamingRecognizeRequest(streaming_config=rasr.StreamingRecognitionConfig(
            config=rasr.RecognitionConfig(encoding=1, sample_rate_hertz=16000)))
        yield rasr.StreamingRecognizeRequest(audio_content=audio)
    hold.wait(30)


@pytest.mark.parametrize("call", ["native", "riva"])
def test_silent_grpc_stream_times_out_and_frees_its_slot(bundle, wav, call) -> None:
    """A gRPC stream that sends nothing for limits.idle_timeout_s gets the final for its audio,
    then DEADLINE_EXCEEDED, and its slot is free again (a new stream is admitted)."""
    import threading
    import time

    import riva.client

    from server.grpc_codegen import generated
    from server.session import Limits

    pb, pb_grpc = generated()
    audio = (load_audio(wav, sample_rate=16_000) * 32767).astype("<i2").tobytes()
    with running_server(bundle, max_streams=1, limits=Limits(idle_timeout_s=0.5)) as app:
        with grpc.insecure_channel(f"127.0.0.1:{app.cfg.grpc_port}") as ch:
            stub = (pb_grpc.AsrStub(ch) if call == "native" else
                    riva.client.proto.riva_asr_pb2_grpc.RivaSpeechRecognitionStub(ch))
            hold = threading.Event()
            finals = []
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as e:
                for resp in stub.StreamingRecognize(quiet_stream_requests(call, audio, hold),
                                                    timeout=20):
                    finals += [r for r in resp.results if r.is_final]
            hold.set()
            assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e.value
            assert "idle_timeout_s" in e.value.details()
            assert time.monotonic() - t0 < 10
            assert len(finals) == 1
            assert app.dispatcher.active_streams == 0
            cfg = pb.RecognitionConfig(format=pb.AudioFormat(encoding=pb.WAV))
            assert pb_grpc.AsrStub(ch).Recognize(pb.RecognizeRequest(
                config=cfg, audio=wav.read_bytes())).text == offline(bundle, wav)


@pytest.mark.parametrize("call", ["native", "riva"])
def test_a_grpc_client_that_stops_reading_is_ended_and_others_continue(bundle, wav, call) -> None:
    """Backpressure over gRPC: a client that sends audio but reads no responses (its receive
    window kept tiny, so they back up into the server) gets its stream closed once more than
    send_queue responses wait (client_too_slow, counted in chorus_errors), and, when it reads
    at last, RESOURCE_EXHAUSTED; a concurrent stream is unaffected."""
    import threading
    import time

    import riva.client

    from server.grpc_codegen import generated

    pb, pb_grpc = generated()
    rasr = riva.client.proto.riva_asr_pb2
    speech = (load_audio(wav, sample_rate=16_000) * 32767).astype("<i2").tobytes()
    audio = speech * 40

    def slow_requests():
        if call == "native":
            yield pb.StreamingRecognizeRequest(streaming_config=pb.StreamingConfig(
                config=pb.RecognitionConfig(format=pb.AudioFormat(encoding=pb.PCM_S16LE,
                                                                  sample_rate_hertz=16000)),
                interim_results=True, continuous=False))
        else:
            yield rasr.StreamingRecognizeRequest(streaming_config=rasr.StreamingRecognitionConfig(
                config=rasr.RecognitionConfig(encoding=1, sample_rate_hertz=16000),
                interim_results=True))
        for i in range(0, len(audio), 3200):
            piece = audio[i : i + 3200]
            yield (pb.StreamingRecognizeRequest(audio=piece) if call == "native" else
                   rasr.StreamingRecognizeRequest(audio_content=piece))

    want = offline(bundle, wav)
    with running_server(bundle, send_queue=8) as app:
        addr = f"127.0.0.1:{app.cfg.grpc_port}"
        good: list = []

        def good_stream() -> None:
            with grpc.insecure_channel(addr) as ch:
                cfg = pb.RecognitionConfig(format=pb.AudioFormat(encoding=pb.WAV))
                reqs = [pb.StreamingRecognizeRequest(streaming_config=pb.StreamingConfig(
                    config=cfg, interim_results=True, continuous=False))]
                data = wav.read_bytes()
                reqs += [pb.StreamingRecognizeRequest(audio=data[i : i + 4000])
                         for i in range(0, len(data), 4000)]
                good.extend(r.text for resp in pb_grpc.AsrStub(ch).StreamingRecognize(iter(reqs))
                            for r in resp.results if r.is_final)

        too_slow = app.metrics.errors.labels("client_too_slow")._value
        opts = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
        with grpc.insecure_channel(addr, options=opts) as ch:
            stub = (pb_grpc.AsrStub(ch) if call == "native" else
                    riva.client.proto.riva_asr_pb2_grpc.RivaSpeechRecognitionStub(ch))
            responses = stub.StreamingRecognize(slow_requests(), timeout=60)
            worker = threading.Thread(target=good_stream)
            worker.start()
            deadline = time.monotonic() + 30
            while too_slow.get() < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert too_slow.get() == 1
            worker.join(60)
            deadline = time.monotonic() + 5
            while app.dispatcher.active_streams and time.monotonic() < deadline:
                time.sleep(0.01)
            assert app.dispatcher.active_streams == 0  # the slot is free
            with pytest.raises(grpc.RpcError) as e:
                for _ in responses:  # reading at last: what was in flight, then the status
                    pass
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
            assert "client_too_slow" in e.value.details()
    assert good == [want]
