"""`nvidia.riva.asr.RivaSpeechRecognition` on our server, with the nvidia-riva-client stubs.

So Riva's own client library and scripts work unchanged. Mapping:
- encoding: LINEAR_PCM -> pcm_s16le, MULAW -> mulaw; audio that starts with a RIFF/WAVE header
  is read as a WAV file whatever the declared encoding (Riva's file scripts send the file's
  bytes, header included, sometimes with ENCODING_UNSPECIFIED and sample_rate_hertz 0);
- language_code: empty means the default (en-US); another language is INVALID_ARGUMENT;
- word times in milliseconds when enable_word_time_offsets; max_alternatives via the beam;
- endpointing_config.stop_history (ms) -> trailing silence that ends an utterance;
- speech_contexts: each phrase is a hotword for the beam decoder; Riva's boost (its examples use
  up to 20) maps to a log bonus per character of boost / 10, clipped to (0, 2];
- enable_automatic_punctuation, profanity_filter, speaker diarization: not done here; a call
  that asks for them gets its transcript without, and trailing metadata `chorus-ignored`
  naming them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from typing import Any

from server.app import App
from server.audio_in import AudioFormat, looks_like_wav
from server.control import Audio, Conversation, Results, Start, Stop, Vocabulary
from server.grpc_common import CallFailed, abort_for, bounded_responses, requests_of
from server.session import Final, Partial, SessionConfig, SessionError
from server.whole import recognize_whole

ENCODINGS = {1: "pcm_s16le", 3: "mulaw"}  # riva_audio_pb2.AudioEncoding values we read
LANGUAGES = ("en-US", "en")
WORDS = Vocabulary(start="streaming_config", audio="audio_content",
                   stop="the end of the requests", resume=None, message="request")


def _pb() -> tuple[Any, Any]:
    import riva.client.proto.riva_asr_pb2 as rasr
    import riva.client.proto.riva_asr_pb2_grpc as rasr_grpc

    return rasr, rasr_grpc


def session_config(app: App, cfg: Any, first_audio: bytes, *, interim: bool = False,
                   continuous: bool = True) -> SessionConfig:
    if cfg.language_code and cfg.language_code not in LANGUAGES:
        raise SessionError("bad_config", f"language_code {cfg.language_code!r} is not served; "
                                         f"this server has {LANGUAGES[0]} (empty means the default)")
    if looks_like_wav(first_audio):
        fmt = AudioFormat("wav", 0)
    elif cfg.encoding in ENCODINGS:
        fmt = AudioFormat(ENCODINGS[cfg.encoding], cfg.sample_rate_hertz, cfg.audio_channel_count or 1)
    else:
        import riva.client.proto.riva_audio_pb2 as raudio

        name = raudio.AudioEncoding.Name(cfg.encoding) if cfg.encoding in raudio.AudioEncoding.values() \
            else str(cfg.encoding)
        raise SessionError("bad_config", f"encoding {name} is not supported: send LINEAR_PCM, "
                                         "MULAW, or a WAV file's bytes (header included)")
    hotwords = tuple((p, min(2.0, max(0.01, ctx.boost / 10))) for ctx in cfg.speech_contexts
                     for p in ctx.phrases if p.strip())
    sc = app.session_config(format=fmt, interim_results=interim, continuous=continuous,
                            max_alternatives=max(1, cfg.max_alternatives), hotwords=hotwords)
    ep = cfg.endpointing_config
    if cfg.HasField("endpointing_config") and ep.stop_history > 0:
        sc = replace(sc, endpoint=replace(sc.endpoint, trailing_silence_ms=float(ep.stop_history)))
    return sc


def ignored_features(cfg: Any) -> list[str]:
    """The features a RecognitionConfig asks for that this server does not have (Riva would
    punctuate, filter profanity, label speakers): transcripts come back without them."""
    asked = {"enable_automatic_punctuation": cfg.enable_automatic_punctuation,
             "profanity_filter": cfg.profanity_filter,
             "enable_speaker_diarization": cfg.diarization_config.enable_speaker_diarization}
    return [name for name, on in asked.items() if on]


def say_ignored(context: Any, cfg: Any) -> None:
    """Tell the client, in trailing metadata `chorus-ignored: a,b`, which requested features
    were not applied (the Riva API has no response field for it)."""
    ignored = ignored_features(cfg)
    if ignored:
        context.set_trailing_metadata((("chorus-ignored", ",".join(ignored)),))


def alternatives(e: Final | Partial, cfg: Any) -> list[Any]:
    rasr, _ = _pb()
    words = []
    if cfg.enable_word_time_offsets:
        words = [rasr.WordInfo(word=w.word, start_time=round(1000 * w.start),
                               end_time=round(1000 * w.end), confidence=w.confidence)
                 for w in e.words]
    first = rasr.SpeechRecognitionAlternative(
        transcript=e.text, confidence=getattr(e, "confidence", 0.0), words=words)
    out = [first]
    if isinstance(e, Final):
        out += [rasr.SpeechRecognitionAlternative(transcript=t)
                for t, _ in e.alternatives[1 : max(1, cfg.max_alternatives)]]
    return out


class RivaAsr(_pb()[1].RivaSpeechRecognitionServicer):  # type: ignore[misc]
    def __init__(self, app: App):
        self.app = app

    async def GetRivaSpeechRecognitionConfig(self, request: Any, context: Any) -> Any:  # noqa: N802
        rasr, _ = _pb()
        resp = rasr.RivaSpeechRecognitionConfigResponse()
        name = self.app.bundle.provenance.get("recipe", "chorus")
        for kind in ("online", "offline"):
            c = resp.model_config.add()
            c.model_name = f"chorus-{name}-{kind}"
            c.parameters.update({"type": kind, "language_code": LANGUAGES[0],
                                 "sample_rate": str(self.app.bundle.features.sample_rate),
                                 "streaming": "true" if kind == "online" else "false"})
        return resp

    async def Recognize(self, request: Any, context: Any) -> Any:  # noqa: N802
        rasr, _ = _pb()
        try:
            cfg = session_config(self.app, request.config, request.audio)
            say_ignored(context, request.config)
            finals = await recognize_whole(self.app, cfg, request.audio)
        except Exception as exc:  # noqa: BLE001
            await abort_for(context, exc)
        return rasr.RecognizeResponse(results=[
            rasr.SpeechRecognitionResult(alternatives=alternatives(f, request.config),
                                         channel_tag=1, audio_processed=f.audio_processed)
            for f in finals if f.text])

    async def StreamingRecognize(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:  # noqa: N802
        async for resp in bounded_responses(self.app, context, self._streaming(requests, context)):
            yield resp

    async def _streaming(self, requests: AsyncIterator[Any],
                         context: Any) -> AsyncGenerator[Any, None]:
        """The responses of one streaming call; on an error, the owed finals, then it raises.
        The stream opens with the first audio (its format may be in the audio's own header)."""
        rasr, _ = _pb()
        conv = Conversation(self.app, WORDS, protocol="riva")
        streaming_cfg: Any = None

        def response(events: list[Any]) -> Any:
            assert streaming_cfg is not None and conv.stream is not None
            return rasr.StreamingRecognizeResponse(results=[
                rasr.StreamingRecognitionResult(
                    alternatives=alternatives(e, streaming_cfg.config), is_final=isinstance(e, Final),
                    stability=1.0 if isinstance(e, Final) else e.stability, channel_tag=1,
                    audio_processed=conv.stream.session.audio_seconds) for e in events])

        try:
            async with contextlib.aclosing(requests_of(self.app, requests)) as reqs:
                async for req in reqs:
                    if req.HasField("streaming_config"):
                        sc = req.streaming_config
                        def deferred(first: Any, sc: Any = sc) -> Any:
                            return session_config(self.app, sc.config, first,
                                                  interim=sc.interim_results)

                        cmd: Any = Start(deferred)
                        outs = await conv.handle(cmd)
                        streaming_cfg = sc
                        say_ignored(context, sc.config)
                    else:
                        outs = await conv.handle(Audio(req.audio_content))
                    events = [e for o in outs if isinstance(o, Results) for e in o.events]
                    if events:
                        yield response(events)
            if conv.phase != "idle":  # a call with no request at all ends quietly, as Riva's
                events = [e for o in await conv.handle(Stop()) if isinstance(o, Results)
                          for e in o.events]
                if events:
                    yield response(events)
        except Exception as exc:  # noqa: BLE001 - every error is reported by its code
            failed = await conv.fail(exc)
            if failed.owed:  # owed finals first, then the error
                yield response(failed.owed)
            raise CallFailed(failed) from exc
        finally:
            conv.release(lost=False)
