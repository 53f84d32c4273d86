"""deploy/'s files validated by the real tools, and what schemas cannot see (deploy/README.md).

The README's commands run here as written (from the repository root): yamllint,
kubernetes-validate (Kubernetes 1.33), the compose specification's schema
(check-jsonschema's vendored copy), ``nginx -t`` (Debian's nginx, unprivileged) and
``systemd-analyze verify``. Each validator is also shown a broken copy, so that a
check that passes is one that could have failed.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from hub.config import Settings
from hub.transport.server import IN_FLIGHT_GRACE, SHUTDOWN_GRACE

from .conftest import timeout
from .doc_blocks import ROOT, doc_blocks
from .nginx_local import (
    NGINX,
    nginx_test,
    prefix_dir,
    render,
    upstream_servers,
    without_addresses,
)
from .processes import free_port, tools_env

README = "deploy/README.md"
K8S_VERSION = "1.33.0"
K8S = ROOT / "deploy/k8s"
COMPOSE = ROOT / "deploy/docker/docker-compose.yml"
UNIT = ROOT / "deploy/systemd/flux-hub.service"


def _readme_block(first_line: str) -> str:
    (block,) = [b for b in doc_blocks() if b.path == README and b.first_line == first_line]
    return block.text


def _env() -> dict[str, str]:
    """A user's shell: the project's tools (flux, yamllint, ...) on PATH."""
    return tools_env()


def _sh(script: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """``script`` in bash from the repository root; its ``mktemp`` files go in ``tmp``."""
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env={**_env(), "TMPDIR": str(tmp)},
        capture_output=True,
        text=True,
        timeout=timeout(120),
        check=False,
    )


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout(120),
        check=False,
    )


# ---------------------------------------------------------------- YAML and schemas


def test_readme_lint_and_schema_commands_pass(tmp_path: Path) -> None:
    done = _sh(_readme_block("yamllint --strict ."), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_readme_validates_every_manifest() -> None:
    """The kubernetes-validate line names every Kubernetes object file of deploy/k8s."""
    command = _readme_block("yamllint --strict .").splitlines()[1]
    named = set(command.split()[4:])
    objects = {
        str(p.relative_to(ROOT)) for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"
    }
    assert named == objects


def test_yamllint_rejects_a_broken_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a:\n  b: 1\n   c: 2\n", encoding="utf-8")
    done = _run("yamllint", "--strict", "-c", ROOT / ".yamllint", bad)
    assert done.returncode != 0 and "syntax error" in done.stdout


def test_hadolint_rejects_a_broken_dockerfile(tmp_path: Path) -> None:
    dockerfile = (ROOT / "deploy/docker/Dockerfile").read_text(encoding="utf-8")
    broken = tmp_path / "Dockerfile"
    broken.write_text(dockerfile.replace("FROM python:3.11-slim", "FROM python"), "utf-8")
    done = _run("hadolint", broken)
    assert done.returncode != 0 and "DL3006" in done.stdout  # an untagged image


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _kustomize(directory: Path) -> list[dict[str, Any]]:
    """What ``kubectl kustomize`` makes of ``directory``, for what deploy/k8s uses.

    resources (files, or directories with their own kustomization) and patches that
    merge maps into an object of the same kind and name; a list in a patch (which
    needs strategic-merge keys) is refused rather than guessed.
    """
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert set(kustomization) <= {"apiVersion", "kind", "resources", "patches"}
    objects: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        objects += _kustomize(path) if path.is_dir() else _docs(path)
    for patch_ref in kustomization.get("patches", []):
        for patch in _docs(directory / patch_ref["path"]):
            (target,) = [
                o
                for o in objects
                if (o["kind"], o["metadata"]["name"]) == (patch["kind"], patch["metadata"]["name"])
            ]
            _merge(target, patch)
    return objects


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        assert not isinstance(value, list), f"a list in a patch ({key}): not supported here"
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return _kustomize(K8S / "base")


@pytest.fixture(scope="module")
def cluster() -> list[dict[str, Any]]:
    return _kustomize(K8S / "redis-cluster")


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


@pytest.mark.parametrize("version", [K8S_VERSION, kubernetes_validate.latest_version()])
@pytest.mark.parametrize("overlay", ["base", "redis-cluster"])
def test_rendered_manifests_match_the_kubernetes_schemas(overlay: str, version: str) -> None:
    for obj in _kustomize(K8S / overlay):
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_validator_rejects_an_unknown_field(base: list[dict[str, Any]]) -> None:
    broken = copy.deepcopy(_one(base, "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.skipif(
    shutil.which("kubectl") is None,
    reason="kubectl is not installed (no Debian/PyPI package); the overlay is still "
    "rendered and validated by test_rendered_manifests_match_the_kubernetes_schemas",
)
@pytest.mark.parametrize("overlay", ["base", "redis-cluster"])
def test_kubectl_kustomize_renders_the_same(overlay: str) -> None:
    done = _run("kubectl", "kustomize", K8S / overlay)
    assert done.returncode == 0, done.stderr
    rendered = [d for d in yaml.safe_load_all(done.stdout) if d]

    def key(o: dict[str, Any]) -> str:
        return f"{o['kind']}/{o['metadata']['name']}"

    assert sorted(rendered, key=key) == sorted(_kustomize(K8S / overlay), key=key)


def test_the_deployment_probes_drains_and_is_locked_down(base: list[dict[str, Any]]) -> None:
    deployment = _one(base, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (hub,) = pod["containers"]
    assert hub["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert hub["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert hub["startupProbe"]["httpGet"]["path"] == "/healthz"
    sleep = hub["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep" and int(sleep[1]) > 0
    drain = Settings.from_env(_pod_env(base)).gateway.shutdown_drain_seconds
    assert drain > 0
    # Then the hub's close: in-flight publishes (IN_FLIGHT_GRACE), then the WebSockets.
    close = IN_FLIGHT_GRACE + SHUTDOWN_GRACE
    assert int(sleep[1]) + drain + close < pod["terminationGracePeriodSeconds"]
    # Readiness notices the drain's 503 before the drain ends.
    readiness = hub["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] < drain
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert hub["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert [m["mountPath"] for m in hub["volumeMounts"]] == ["/tmp"]
    assert "replicas" not in deployment["spec"]  # the HPA's to set


def test_service_pdb_hpa_and_ingress_point_at_the_hubs(base: list[dict[str, Any]]) -> None:
    deployment = _one(base, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    service = _one(base, "Service")
    assert service["spec"]["selector"] == labels
    assert _one(base, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == labels
    (spread,) = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"] == labels
    hpa = _one(base, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 1 <= _one(base, "PodDisruptionBudget")["spec"]["minAvailable"] < hpa["minReplicas"]
    ingress = _one(base, "Ingress")
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"]["name"] == service["metadata"]["name"]
    assert path["backend"]["service"]["port"]["name"] in {
        p["name"] for p in service["spec"]["ports"]
    }
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/limit-connections"] == "1000"
    for timeout_name in ("proxy-read-timeout", "proxy-send-timeout"):
        # Far above the hub's 20 s ping interval (and ingress-nginx's 60 s default).
        assert int(notes[f"nginx.ingress.kubernetes.io/{timeout_name}"]) >= 600


def _pod_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The hub container's environment, with the Secret's values filled in."""
    secret = _one(objects, "Secret")["stringData"]
    (hub,) = _one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for var in hub["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["name"] == _one(objects, "Secret")["metadata"]["name"]
            env[var["name"]] = secret[ref["key"]]
    for source in hub.get("envFrom", []):
        ref = source["configMapRef"]
        maps = [
            o for o in objects if (o["kind"], o["metadata"]["name"]) == ("ConfigMap", ref["name"])
        ]
        assert maps or ref.get("optional"), ref
        for config_map in maps:
            env.update(config_map["data"])
    return env


def _known(names: list[str]) -> list[str]:
    """The names hub/config.py does not read."""
    source = (ROOT / "hub/config.py").read_text(encoding="utf-8")
    return [n for n in names if f'"{n}"' not in source]


@pytest.mark.parametrize("overlay", ["base", "redis-cluster"])
def test_the_hub_accepts_the_pods_environment(overlay: str) -> None:
    env = _pod_env(_kustomize(K8S / overlay))
    assert _known(list(env)) == []
    settings = Settings.from_env(env)  # raises on a value the hub refuses
    assert settings.gateway.auth_enabled and settings.gateway.admin_token
    assert settings.connectors.encryption_key is not None
    assert len(base64.b64decode(settings.connectors.encryption_key)) == 32
    url = settings.redis.url
    assert url is not None
    assert ("cluster" in url) is (overlay == "redis-cluster")
    # On a cluster, partitions spread over the masters (docs/scaling.md).
    assert settings.redis.partitions == (16 if overlay == "redis-cluster" else 1)
    _per_address_limits_are_the_proxys(settings)


def _per_address_limits_are_the_proxys(settings: Settings) -> None:
    """Behind a proxy every client has its address: the hub's per-address limits would
    cap the whole hub, so they are the per-hub ones (the proxy bounds real addresses)."""
    gateway = settings.gateway
    assert gateway.max_connections_per_client == gateway.max_connections
    assert gateway.max_unfinished_heads_per_client == gateway.max_unfinished_heads


# ---------------------------------------------------------------- compose


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def test_compose_schema_rejects_a_broken_file(tmp_path: Path) -> None:
    compose = _compose()
    compose["services"]["nginx"]["depends_on"]["hub-1"]["condition"] = "service_ready"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(json.dumps(compose), encoding="utf-8")
    done = _run("check-jsonschema", "--builtin-schema", "vendor.compose-spec", broken)
    assert done.returncode != 0 and "service_ready" in done.stdout + done.stderr


def test_compose_gates_nginx_on_every_hub_and_every_hub_on_redis() -> None:
    services = _compose()["services"]
    hubs = sorted(name for name, s in services.items() if "build" in s)
    assert hubs == ["hub-1", "hub-2", "hub-3"]
    assert services["nginx"]["depends_on"] == {
        hub: {"condition": "service_healthy"} for hub in hubs
    }
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for name in hubs:
        hub = services[name]
        assert hub["depends_on"] == {"redis": {"condition": "service_healthy"}}
        assert "/readyz" in " ".join(hub["healthcheck"]["test"])
        assert hub["read_only"] is True and hub["cap_drop"] == ["ALL"]
        assert _known(list(hub["environment"])) == []
        settings = Settings.from_env({k: str(v) for k, v in hub["environment"].items()})
        _per_address_limits_are_the_proxys(settings)
    # With auth off, the published port is on loopback only (docs/security.md).
    assert not any(Settings.from_env(services[h]["environment"]).gateway.auth_enabled for h in hubs)
    assert services["nginx"]["ports"] == ["127.0.0.1:8080:8080"]
    nginx_conf = (ROOT / "deploy/docker/nginx-compose.conf").read_text(encoding="utf-8")
    assert upstream_servers(nginx_conf) == [f"{hub}:3000" for hub in hubs]


async def test_the_compose_healthcheck_passes_on_a_ready_hub_only(base_url: str) -> None:
    (test,) = {
        json.dumps(s["healthcheck"]["test"])
        for s in _compose()["services"].values()
        if "build" in s
    }
    cmd, program, *args = json.loads(test)
    assert (cmd, program) == ("CMD", "python")

    async def check(port: int | str) -> int:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *(a.replace(":3000/", f":{port}/") for a in args),
            stderr=asyncio.subprocess.DEVNULL,
        )
        return await asyncio.wait_for(process.wait(), timeout(30))

    assert await check(base_url.rsplit(":", 1)[1]) == 0
    assert await check(free_port()) != 0


# ---------------------------------------------------------------- nginx

needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (.ci/run installs Debian's nginx)"
)


@needs_nginx
def test_readme_nginx_t_passes(tmp_path: Path) -> None:
    done = _sh(
        _readme_block('nginx -t -p "$(mktemp -d)" -c "$PWD/deploy/nginx/standalone.conf"'),
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


@needs_nginx
@pytest.mark.parametrize(
    "shipped", ["deploy/nginx/flux-hub.conf", "deploy/docker/nginx-compose.conf"]
)
def test_nginx_t_as_an_unprivileged_user(shipped: str) -> None:
    conf = (ROOT / shipped).read_text(encoding="utf-8")
    if shipped.startswith("deploy/docker"):
        # Compose's host names resolve only inside compose: point them at loopback.
        conf = render(conf, ["127.0.0.1:3000"] * 3, "8080")
    with prefix_dir(conf) as prefix:
        done = nginx_test(prefix)
    assert done.returncode == 0, done.stderr


@needs_nginx
def test_nginx_t_rejects_a_broken_file() -> None:
    conf = (ROOT / "deploy/nginx/flux-hub.conf").read_text(encoding="utf-8")
    with prefix_dir(conf.replace("proxy_buffering off;", "proxy_buffering of;")) as prefix:
        done = nginx_test(prefix)
    assert done.returncode != 0 and "proxy_buffering" in done.stderr


@pytest.mark.parametrize(
    "shipped", ["deploy/nginx/flux-hub.conf", "deploy/docker/nginx-compose.conf"]
)
def test_nginx_bounds_each_client_address(shipped: str) -> None:
    conf = (ROOT / shipped).read_text(encoding="utf-8")
    assert "limit_conn_zone $binary_remote_addr zone=flux_per_client:10m;" in conf
    assert re.search(r"^\s+limit_conn flux_per_client 1000;$", conf, re.M)
    assert re.search(r"^\s+limit_conn_status 429;$", conf, re.M)


def test_the_two_nginx_configs_differ_only_in_their_upstream_servers() -> None:
    def essential(path: str) -> list[str]:
        text = without_addresses((ROOT / path).read_text(encoding="utf-8"))
        return [line for line in text.splitlines() if not line.lstrip().startswith("#")]

    assert essential("deploy/nginx/flux-hub.conf") == essential("deploy/docker/nginx-compose.conf")


# ---------------------------------------------------------------- systemd

SYSTEMD_BLOCK = "root=$(mktemp -d)"
needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or not Path("/usr/lib/systemd/system").is_dir(),
    reason="systemd-analyze is not installed (.ci/run installs Debian's systemd)",
)


@needs_systemd
def test_readme_systemd_analyze_verify_is_silent_and_the_sandbox_scores_3(
    tmp_path: Path,
) -> None:
    done = _sh(_readme_block(SYSTEMD_BLOCK), tmp_path)
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    # verify printed nothing; security printed only its table, ending with the score.
    lines = done.stdout.splitlines()
    assert lines[0].split()[:2] == ["NAME", "DESCRIPTION"], lines[0]
    assert "Overall exposure level for flux-hub.service: 3.0 OK" in lines[-1]


@needs_systemd
def test_systemd_analyze_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    broken = tmp_path / "flux-hub.service"
    broken.write_text(
        UNIT.read_text(encoding="utf-8").replace("ProtectHome=true", "ProtectHome=maybe"),
        encoding="utf-8",
    )
    script = _readme_block(SYSTEMD_BLOCK).replace("deploy/systemd/flux-hub.service", str(broken))
    done = _sh(script, tmp_path)
    assert "protect home value" in done.stderr, done.stderr


def test_the_units_command_line_is_one_flux_serve_accepts() -> None:
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", UNIT.read_text(encoding="utf-8"), re.M)
    program, *args = exec_start.split()
    assert program.endswith("/bin/flux") and args[0] == "serve"
    from hub.cli import _parser  # the parser `flux` itself uses

    parsed = _parser().parse_args(args)
    assert parsed.port == 3000 and str(parsed.data_dir) == "/var/lib/flux-hub/data"
