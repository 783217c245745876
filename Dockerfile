# syntax=docker/dockerfile:1
# The Chorus server: `chorus serve` with the shipped default bundle (models/pretrained/default).
#
#   docker build -t chorus:cpu .                              # CPU torch (.ci/constraints-cpu.txt)
#   docker build --build-arg VARIANT=cuda -t chorus:cuda .    # CUDA torch (.ci/constraints-gpu.txt)
#   docker run --rm -p 8000:8000 -p 50051:50051 chorus:cpu    # WebSocket + HTTP :8000, gRPC :50051
#
# Settings are chorus serve's: flags after the image name, or CHORUS_<FIELD> variables
# (docs/deploy.md). SIGTERM drains (readiness 503, owed finals delivered) within
# CHORUS_DRAIN_TIMEOUT_S (30 s): give `docker stop -t 40`.
#
# Two stages on one base image, so that the virtual environment's interpreter path is the same
# in both. The install is the Makefile's own (`make venv`): pip with the constraints file that
# pins torch, the CPU wheel index when PyPI has no +cpu wheel, and the gRPC stubs generated.
# The package is installed in editable mode from /opt/chorus because the default bundle, the
# protos and the browser page live in the source tree, not in a wheel.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=cpu
RUN case "$VARIANT" in cpu|cuda) ;; *) echo "VARIANT must be cpu or cuda, got $VARIANT" >&2; exit 1;; esac \
 && apt-get update \
 && apt-get install -y --no-install-recommends make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/chorus
COPY pyproject.toml README.md Makefile ./
COPY .ci/ .ci/
COPY protos/ protos/
COPY models/ models/
COPY server/ server/
COPY clients/ clients/
COPY loadtest/ loadtest/
COPY training/ training/
ENV OMP_WAIT_POLICY=PASSIVE PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# cuda: HAS_CUDA=1 selects .ci/constraints-gpu.txt (the build machine has no GPU to detect)
RUN make venv VENV=/opt/venv EXTRAS=server,export $([ "$VARIANT" = cuda ] && echo HAS_CUDA=1) \
 && if [ "$VARIANT" = cuda ]; then \
      /opt/venv/bin/pip uninstall -y onnxruntime \
      && /opt/venv/bin/pip install 'onnxruntime-gpu>=1.18'; \
    fi
# encoder.onnx for --backend onnxruntime, exported (and checked against torch) now, so the
# read-only image never exports at start-up
RUN /opt/venv/bin/chorus export \
 && /opt/venv/bin/python -m compileall -q models server clients loadtest training

FROM ${PYTHON_IMAGE} AS runtime
ARG VARIANT=cpu
LABEL org.opencontainers.image.title="chorus" \
      org.opencontainers.image.description="Chorus streaming speech recognition server (${VARIANT})"
RUN groupadd --system --gid 10001 chorus \
 && useradd --system --uid 10001 --gid chorus --home-dir /opt/chorus --no-create-home \
      --shell /usr/sbin/nologin chorus
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/chorus /opt/chorus
ENV PATH=/opt/venv/bin:$PATH \
    OMP_WAIT_POLICY=PASSIVE \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CHORUS_HOST=0.0.0.0 \
    CHORUS_WS_PORT=8000 \
    CHORUS_GRPC_PORT=50051
WORKDIR /opt/chorus
USER 10001:10001
# 8000: WebSocket /v1/stream + HTTP /healthz /readyz /metrics; 50051: gRPC (native + Riva);
# optional: CHORUS_VOSK_PORT=2700 (Vosk protocol), CHORUS_HTTP_PORT=8080 (OpenAI-compatible)
EXPOSE 8000 50051
STOPSIGNAL SIGTERM
# /readyz answers 200 while streams are admitted, 503 while starting or draining
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('CHORUS_WS_PORT', '8000'), timeout=2)" || exit 1
ENTRYPOINT ["chorus", "serve"]
CMD []
