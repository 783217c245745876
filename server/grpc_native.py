"""The native gRPC service `chorus.asr.v1.Asr` (protos/chorus/asr/v1/asr.proto).

StreamingRecognize supports resume after reconnect: the first response carries the stream's
resume_token, every response and result the `acked` audio bytes (a half-closed call's last
response carries all of them, even when the last bytes made no result); a call cancelled before the
stream ended (client cancel, connection lost) detaches its stream (App.detach) instead of
closing it, and a new call whose first request is `resume` continues it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from server.app import App, Stream
from server.audio_in import AudioFormat
from server.control import (
    Audio,
    Command,
    Conversation,
    End,
    Output,
    Ready,
    Results,
    Resume,
    Start,
    Stop,
    Vocabulary,
)
from server.grpc_codegen import generated
from server.grpc_common import (
    CallFailed,
    RelayedStatus,
    abort_for,
    bounded_responses,
    requests_of,
)
from server.session import Event, Final, Partial, SessionConfig
from server.whole import recognize_whole

pb, pb_grpc = generated()
# A cut call's request stream ends (EOF) tens of microseconds before its cancellation reaches
# the handler, so a half-close (end of audio: irreversible) is acted on only if the call is
# still alive after this grace; a cut call is cancelled within it and its stream detached.
HALF_CLOSE_GRACE_S = 0.02
ENCODINGS = {0: "wav", 1: "pcm_s16le", 2: "pcm_f32le", 3: "mulaw", 4: "wav"}
WORDS = Vocabulary(start="streaming_config", audio="audio", stop="the end of the requests",
                   resume="resume", message="request")


def session_config(app: App, cfg: Any, *, interim: bool = False, continuous: bool = True) -> SessionConfig:
    f = cfg.format
    return app.session_config(
        format=AudioFormat(ENCODINGS.get(f.encoding, f"enum {f.encoding}"), f.sample_rate_hertz,
                           f.channels or 1),
        interim_results=interim, continuous=continuous, max_alternatives=cfg.max_alternatives or 1,
        decoder=cfg.decoder or None,
        hotwords=tuple((h.phrase, h.boost or 1.5) for h in cfg.hotwords))


def flag(msg: Any, name: str) -> bool:
    """An `optional bool` of StreamingConfig: true when the client left it out (WebSocket's
    defaults: partials, a final per utterance)."""
    return getattr(msg, name) if msg.HasField(name) else True


def result_of(e: Final | Partial, acked: int = 0) -> Any:
    words = [pb.Word(word=w.word, start=w.start, end=w.end, confidence=w.confidence)
             for w in e.words]
    if isinstance(e, Partial):
        return pb.Result(text=e.text, is_final=False, stability=e.stability, words=words,
                         audio_processed=e.audio_processed, acked=acked,
                         processing_latency_ms=e.processing_latency_ms)
    return pb.Result(text=e.text, is_final=True, stability=1.0, confidence=e.confidence,
                     words=words, start=e.start, end=e.end, audio_processed=e.audio_processed,
                     alternatives=[pb.Alternative(text=t, score=s) for t, s in e.alternatives],
                     acked=acked, seq=e.seq, processing_latency_ms=e.processing_latency_ms)


def streaming_response(stream: Stream, events: list[Any], **extra: Any) -> Any:
    return pb.StreamingRecognizeResponse(stream_id=stream.sid, acked=stream.acked,
                                         results=[result_of(e, stream.acked) for e in events],
                                         **extra)


def response_of(finals: list[Final]) -> Any:
    return pb.RecognizeResponse(results=[result_of(f) for f in finals],
                                text=" ".join(f.text for f in finals if f.text))


async def relay(target: str, first: Any, rest: AsyncIterator[Any],
                metadata: tuple[tuple[str, str], ...]) -> AsyncGenerator[Any, None]:
    """A resume whose stream another worker holds (server.workers): the call goes on there,
    through that worker's private socket `target`: `first` (the resume) and the rest of the
    requests go there, its responses come back, and its status ends this call
    (RelayedStatus). A cut call is cancelled there too (the owner detaches the stream again).
    The requests are written by a task of this call's own, ended before this returns (the
    caller then closes `rest`)."""
    import grpc

    async with grpc.aio.insecure_channel(target) as channel:
        call = pb_grpc.AsrStub(channel).StreamingRecognize(metadata=metadata)

        async def up() -> None:
            await call.write(first)
            async for r in rest:
                await call.write(r)
            await call.done_writing()

        writer = asyncio.ensure_future(up())
        try:
            while (resp := await call.read()) is not grpc.aio.EOF:
                yield resp
            if writer.done() and not writer.cancelled() and writer.exception() is not None:
                raise writer.exception()  # type: ignore[misc]
        except grpc.aio.AioRpcError as exc:
            trailing = tuple((k, v) for k, v in exc.trailing_metadata() or ()
                             if isinstance(v, str))
            raise RelayedStatus(exc.code(), exc.details() or "", trailing) from None
        finally:
            call.cancel()
            writer.cancel()
            await asyncio.wait({writer})


class NativeAsr(pb_grpc.AsrServicer):  # type: ignore[misc,name-defined]
    def __init__(self, app: App):
        self.app = app

    async def Recognize(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC names)
        try:
            return response_of(await recognize_whole(self.app, session_config(self.app, request.config),
                                                     request.audio))
        except Exception as exc:  # noqa: BLE001
            await abort_for(context, exc)

    async def BatchRecognize(self, request: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        try:
            cfg = session_config(self.app, request.config)
            cfg.validate()
        except Exception as exc:  # noqa: BLE001
            await abort_for(context, exc)
        sem = asyncio.Semaphore(max(1, self.app.cfg.max_streams // 2))

        async def one(item: Any) -> Any:
            async with sem:
                try:
                    return pb.BatchRecognizeResponse(id=item.id, response=response_of(
                        await recognize_whole(self.app, cfg, item.audio)))
                except Exception as exc:  # noqa: BLE001 - one bad item does not stop the rest
                    return pb.BatchRecognizeResponse(id=item.id, error=f"{type(exc).__name__}: {exc}")

        for done in asyncio.as_completed([one(i) for i in request.items]):
            yield await done

    async def StreamingRecognize(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:  # noqa: N802
        metadata = tuple((k, v) for k, v in context.invocation_metadata() or ()
                         if not k.startswith(":") and k != "user-agent")
        if self.app.worker is not None:  # which worker took the call (server.workers)
            await context.send_initial_metadata((("chorus-worker", str(self.app.worker.index)),))
        async for resp in bounded_responses(self.app, context,
                                            self._streaming(requests, metadata)):
            yield resp

    def command(self, req: Any) -> Command:
        """A request -> a control-protocol command."""
        kind = req.WhichOneof("request")
        if kind == "streaming_config":
            sc = req.streaming_config
            return Start(session_config(self.app, sc.config, interim=flag(sc, "interim_results"),
                                        continuous=flag(sc, "continuous")), resumable=True)
        if kind == "resume":
            return Resume(req.resume.token, req.resume.offset, req.resume.finals)
        return Audio(req.audio)

    async def _streaming(self, requests: AsyncIterator[Any],
                         metadata: tuple[tuple[str, str], ...] = ()) -> AsyncGenerator[Any, None]:
        """The responses of one streaming call; on an error, the owed finals, then it raises.
        Cancelled (the call was cut) before the stream ended: the stream is detached."""
        conv = Conversation(self.app, WORDS, protocol="grpc")

        def response(outs: list[Output]) -> Any | None:
            """One response for a command's outputs (None: nothing to send)."""
            stream, extra = conv.stream, {}
            events: list[Event] = []
            for out in outs:
                if isinstance(out, Ready):
                    stream, events = out.stream, [*events, *out.owed]
                    extra = {"resume_token": out.stream.token or "",
                             **({"resumed": True} if out.resumed else {})}
                elif isinstance(out, Results):
                    events += out.events
            if stream is None or not (events or extra):
                return None
            return streaming_response(stream, events, **extra)

        ended = False  # the stream ended by the protocol (half-close, error): not resumable
        told = 0  # the `acked` of the last response sent
        try:
            async with contextlib.aclosing(requests_of(self.app, requests, conv.owner)) as reqs:
                async for req in reqs:
                    cmd = self.command(req)
                    if (owner := conv.held_elsewhere(cmd)) is not None:
                        ended = True  # nothing of this worker's to release
                        async for resp in relay(self.app.worker.grpc_target(owner), req, reqs,
                                                metadata):
                            yield resp
                        return
                    if (resp := response(await conv.handle(cmd))) is not None:
                        told = resp.acked
                        yield resp
            if conv.stream is not None and conv.stream.token is not None:
                await asyncio.sleep(HALF_CLOSE_GRACE_S)  # a half-close, or a cut call?
            # a call with no request at all ends quietly (there is no stream to stop)
            stream = conv.stream
            outs = await conv.handle(Stop()) if conv.phase != "idle" else []
            ended = True
            resp = response([o for o in outs if not isinstance(o, End)])
            if resp is None and stream is not None and stream.acked > told:
                # audio taken since the last response made no result (silence, less than a
                # chunk): the last response still tells the client every byte was taken
                resp = streaming_response(stream, [])
            if resp is not None:
                yield resp
        except GeneratorExit:  # closed by bounded_responses (client_too_slow)
            ended = True
            raise
        except RelayedStatus:  # how the relayed call ended, passed on by abort_for
            raise
        except Exception as exc:  # noqa: BLE001 - every error is reported by its code
            ended = True
            failed = await conv.fail(exc)
            if failed.owed and conv.stream is not None:  # owed finals first, then the error
                yield streaming_response(conv.stream, failed.owed)
            raise CallFailed(failed) from exc
        finally:
            conv.release(lost=not ended)
