"""Deployment files: the Kubernetes manifests validate offline against the Kubernetes API
schemas kubernetes-validate ships (strict: no unknown fields), agree with the server they run
(ports, probe paths, drain time, metric names); the Dockerfile copies paths that exist and are
not .dockerignored, and its HEALTHCHECK passes against a real `chorus serve` on /readyz.
Docker and a cluster are not available here: nothing is built or applied."""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KINDS = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}


def manifests() -> list[tuple[Path, dict]]:
    return [(path, doc) for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def one(kind: str, name: str = "chorus") -> dict:
    (doc,) = [d for _, d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def test_manifests_validate_offline_against_the_kubernetes_schemas() -> None:
    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError, latest_version

    docs = manifests()
    assert {d["kind"] for _, d in docs} == KINDS
    for path, doc in docs:
        for version in ("1.25.0", latest_version()):  # the oldest and newest schemas it ships
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except ValidationError as exc:
                pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']} ({version}): "
                            f"{exc.message} at {'.'.join(map(str, exc.path))}")
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted({p.name for p, _ in docs})


def http_status(path: str, *, ready: bool) -> int:
    """What the server's HTTP routes (server/ws.py) answer for `path`."""
    import asyncio

    from server.ws import make_process_request

    app = SimpleNamespace(ready=ready)
    answer = make_process_request(app)(None, SimpleNamespace(path=path, headers={}))
    return int(asyncio.run(answer).status_code)  # a coroutine: /metrics may ask other workers


def test_manifests_agree_with_the_server() -> None:
    from server.serve import load_server_config

    dep = one("Deployment")
    pod = dep["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    cfg = load_server_config(None, env, {})  # what `chorus serve` makes of the pod's environment
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert (cfg.host, ports["http"], ports["grpc"]) == ("0.0.0.0", cfg.ws_port, cfg.grpc_port)
    assert (ports["vosk"], ports["openai"]) == (cfg.vosk_port, cfg.http_port)
    # probes on the real routes: readiness 503 while draining, liveness 200 all along
    ready, live, startup = c["readinessProbe"], c["livenessProbe"], c["startupProbe"]
    assert ready["httpGet"]["port"] == live["httpGet"]["port"] == startup["httpGet"]["port"] == "http"
    assert http_status(ready["httpGet"]["path"], ready=True) == 200
    assert http_status(ready["httpGet"]["path"], ready=False) == 503
    assert http_status(live["httpGet"]["path"], ready=False) == 200
    assert http_status(startup["httpGet"]["path"], ready=False) == 200
    # drain: the grace period covers the preStop pause plus the server's whole drain
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace >= float(pre_stop[1]) + cfg.drain_timeout_s + 5, grace
    assert pod["spec"]["securityContext"]["runAsNonRoot"] and pod["spec"]["securityContext"]["runAsUser"]
    assert int(pod["metadata"]["annotations"]["prometheus.io/port"]) == cfg.ws_port
    # services route to named container ports; affinity outlives the resume window
    labels = pod["metadata"]["labels"]
    for svc in (d for _, d in manifests() if d["kind"] == "Service"):
        assert svc["spec"]["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= set(ports)
    affinity = one("Service")["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"]
    assert affinity > cfg.resume_window_s
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # autoscaling on the server's own open-streams gauge, below the admission limit
    hpa = one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": dep["metadata"]["name"]}
    (metric,) = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert f'GaugeMetricFamily("{name}"' in (ROOT / "server" / "metrics.py").read_text()
    assert 0 < float(metric["pods"]["target"]["averageValue"]) < cfg.max_streams
    adapter = yaml.safe_load((ROOT / "deploy" / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    assert rule["seriesQuery"].startswith(name + "{") and rule["name"]["as"] == name


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") and not pending:
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip():
            instr, _, args = pending.strip().partition(" ")
            out.append((instr.upper(), args.strip()))
        pending = ""
    return out


def dockerignored(rel: str) -> bool:
    patterns = [p.strip().lstrip("/") for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    tails = ["/".join(parts[i:]) for i in range(len(parts))]
    return any(fnmatch.fnmatchcase(x, p[3:] if p.startswith("**/") else p)
               for p in patterns for x in (tails if p.startswith("**/") else prefixes))


def test_dockerfile_copies_what_exists_and_installs_as_the_makefile_does() -> None:
    steps = dockerfile()
    froms = [a for i, a in steps if i == "FROM"]
    assert len(froms) >= 2 and froms[-1].endswith("AS runtime")  # multi-stage
    copies = [shlex.split(a) for i, a in steps if i == "COPY" and not a.startswith("--from")]
    sources = [src.rstrip("/") for args in copies for src in args[:-1]]
    for src in sources:
        assert (ROOT / src).exists(), src
        assert not dockerignored(src), f"{src} is excluded by .dockerignore"
    # the default bundle travels inside models/, nothing of it ignored
    assert "models" in sources
    for f in (ROOT / "models" / "pretrained" / "default").rglob("*"):
        rel = f.relative_to(ROOT).as_posix()
        if f.is_file() and f.suffix not in (".onnx", ".plan"):
            assert not dockerignored(rel), rel
    # the Makefile's install: its venv target, variables and both constraints files
    (make,) = [a for i, a in steps if i == "RUN" and "make venv" in a]
    makefile = (ROOT / "Makefile").read_text()
    assert "\nvenv: $(STAMP)" in makefile and "HAS_CUDA := " in makefile
    assert "CONSTRAINTS := .ci/constraints-$(if $(HAS_CUDA),gpu,cpu).txt" in makefile
    for variant in ("cpu", "gpu"):
        assert "torch==" in (ROOT / ".ci" / f"constraints-{variant}.txt").read_text()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (wanted,) = [w.split("=", 1)[1] for w in make.split() if w.startswith("EXTRAS=")]
    assert set(wanted.split(",")) <= set(extras) and "HAS_CUDA=1" in make
    assert (ROOT / ".ci" / "system-packages.sh").is_file()
    # runtime: non-root, every listening port exposed, the server as the entry point
    runtime = steps[max(i for i, (instr, _) in enumerate(steps) if instr == "FROM"):]
    (user,) = [a for i, a in runtime if i == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    env = dict(kv.split("=", 1) for i, a in runtime if i == "ENV" for kv in a.split())
    (expose,) = [a.split() for i, a in runtime if i == "EXPOSE"]
    assert {env["CHORUS_WS_PORT"], env["CHORUS_GRPC_PORT"]} <= set(expose)
    assert env["CHORUS_HOST"] == "0.0.0.0" and env["OMP_WAIT_POLICY"] == "PASSIVE"
    (entry,) = [json.loads(a) for i, a in runtime if i == "ENTRYPOINT"]
    assert entry == ["chorus", "serve"]


def test_dockerfile_healthcheck_hits_the_real_readiness_path(tmp_path) -> None:
    from tests.server.test_serve import start_server

    (check,) = [a for i, a in dockerfile() if i == "HEALTHCHECK"]
    command = check.split(" CMD ", 1)[1]
    assert "/readyz" in command and http_status("/readyz", ready=False) == 503
    proc, port = start_server(tmp_path)
    env = {**os.environ, "CHORUS_WS_PORT": str(port),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    try:
        ok = subprocess.run(["sh", "-c", command], env=env, capture_output=True, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert ok.returncode == 0, ok.stderr
    gone = subprocess.run(["sh", "-c", command], env=env, capture_output=True, timeout=30)
    assert gone.returncode != 0  # nothing listening: unhealthy
