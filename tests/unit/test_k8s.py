"""deploy/k8s, checked statically (no cluster here): kustomize's resources exist and parse,
every container runs a tiller command with settings the code reads, probes use the endpoints
the services serve, Services select their pods (router and quota headless, for client-side
balancing), each worker pool's KEDA trigger watches a task queue models.yaml names, the
one that pool polls, every service of the internal plane has its own certificate, and
NetworkPolicies let in only who calls whom."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.support import service_env_names
from tiller.cli.main import SERVICES
from tiller.router.config import parse
from tiller.router.table import compile_models

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"


def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return data


def resources() -> list[dict[str, Any]]:
    found = []
    for name in kustomization()["resources"]:
        found += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return found


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in resources() if r["kind"] == kind}


def settings() -> dict[str, str]:
    generated = {g["name"]: g for g in kustomization()["configMapGenerator"]}
    return dict(line.split("=", 1) for line in generated["tiller-settings"]["literals"])


def test_every_container_runs_tiller_with_settings_it_reads() -> None:
    read = service_env_names()
    assert set(settings()) <= read
    for name, deployment in of_kind("Deployment").items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"] == "tiller" and container["args"][0] in SERVICES, name
        passed = {e["name"] for e in container.get("env", [])}
        assert passed <= read, f"{name}: not settings: {sorted(passed - read)}"
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_probes_use_what_each_service_serves() -> None:
    deployments = of_kind("Deployment")
    gateway = deployments["gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz?deps=0"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for name, port in (("router", 50062), ("quota", 50063)):
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        # grpc.health.v1 on the plaintext health port: kubelet's gRPC probes speak no TLS
        assert container["readinessProbe"]["grpc"]["port"] == port
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env[f"TILLER_{name.upper()}_HEALTH_PORT"] == str(port)


def test_services_select_pods_and_router_and_quota_are_headless() -> None:
    pods = {
        name: d["spec"]["template"]["metadata"]["labels"]
        for name, d in of_kind("Deployment").items()
    }
    services = of_kind("Service")
    for name, service in services.items():
        selector = service["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pods.values()), name
    assert services["router"]["spec"]["clusterIP"] == "None"
    assert services["quota"]["spec"]["clusterIP"] == "None"
    # Short names: the manifests apply to whatever namespace `kubectl -n` picks.
    assert settings()["TILLER_ROUTER_ADDRESS"] == "router:50052"
    assert settings()["TILLER_QUOTA_ADDRESS"] == "quota:50053"


def test_each_worker_pool_scales_on_the_queue_it_polls() -> None:
    text = (K8S / "models.yaml").read_text()
    table = compile_models(parse(text), text.encode())
    queues = {d.task_queue for m in table.models.values() for d in m.deployments}
    deployments = of_kind("Deployment")
    scaled = of_kind("ScaledObject")
    assert scaled, "no KEDA ScaledObject"
    for name, scaler in scaled.items():
        target = deployments[scaler["spec"]["scaleTargetRef"]["name"]]
        env = {
            e["name"]: e.get("value")
            for e in target["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        (trigger,) = scaler["spec"]["triggers"]
        assert trigger["type"] == "temporal", name
        meta = trigger["metadata"]
        assert meta["taskQueue"] in queues and meta["taskQueue"] == env["TILLER_WORKER_TASK_QUEUES"]
        assert meta["queueTypes"] == "activity"  # requests are activities
        assert meta["endpoint"] == settings()["TILLER_TEMPORAL_ADDRESS"]
        assert int(meta["targetQueueSize"]) > 0
        # The backlog reads 0 while a pool keeps up: scale-down must wait well past a stream.
        behavior = scaler["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300


def test_gateways_scale_with_an_hpa() -> None:
    (hpa,) = of_kind("HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"]["name"] == "gateway"
    assert hpa["spec"]["minReplicas"] >= 2


def test_every_service_of_the_internal_plane_has_its_own_certificate() -> None:
    deployments = of_kind("Deployment")
    for name, deployment in deployments.items():
        if name == "demo-engine":
            continue
        service = name.split("-")[0]  # worker-demo: a worker
        spec = deployment["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        from_settings = bool(container.get("envFrom"))
        directory = env.get("TILLER_INTERNAL_TLS_DIR") or (
            settings()["TILLER_INTERNAL_TLS_DIR"] if from_settings else None
        )
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["internal-tls"] == directory, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["internal-tls"]["secret"]["secretName"] == f"tiller-internal-{service}"
        assert "TILLER_INTERNAL_INSECURE" not in env, name


def test_network_policies_let_in_only_who_calls_whom() -> None:
    policies = of_kind("NetworkPolicy")
    deny = policies["default-deny-ingress"]["spec"]
    assert (
        deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    )
    callers = {"router": {"gateway", "worker"}, "quota": {"gateway"}, "demo-engine": {"worker"}}
    service_ports = {"router": 50052, "quota": 50053, "demo-engine": 9000}
    for name, allowed in callers.items():
        rules = policies[name]["spec"]["ingress"]
        (guarded,) = [r for r in rules if {"port": service_ports[name]} in r["ports"]]
        who = {p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in guarded["from"]}
        assert who == allowed, name
        assert all("from" in r for r in rules if {"port": service_ports[name]} in r["ports"])


def test_every_gateway_pod_shares_one_files_volume() -> None:
    gateway = of_kind("Deployment")["gateway"]["spec"]["template"]["spec"]
    (container,) = gateway["containers"]
    files_dir = {e["name"]: e.get("value") for e in container["env"]}["TILLER_GATEWAY_FILES_DIR"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume = {v["name"]: v for v in gateway["volumes"]}[mounts[files_dir]]
    claim = of_kind("PersistentVolumeClaim")[volume["persistentVolumeClaim"]["claimName"]]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # pods on several nodes
