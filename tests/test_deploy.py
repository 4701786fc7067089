"""The Containerfile and deploy/k8s: valid, hardened, and in agreement with the app's own settings.

The manifests are checked offline against the Kubernetes JSON schemas that the
`kubernetes-validate` package bundles (strict: an unknown or misspelt field fails), and against
the code: probe paths are routes of the listener their port belongs to, ports and drain timings
are the ones `chatsvc.config.Settings` reads from the container's environment.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from chatsvc import admin, app
from chatsvc.config import Settings, describe
from chatsvc.testing import require_program
from tests import PROJECT_ROOT

K8S = PROJECT_ROOT / "deploy" / "k8s"
CONTAINERFILE = PROJECT_ROOT / "Containerfile"
CONTAINERIGNORE = PROJECT_ROOT / ".containerignore"
# The oldest Kubernetes release whose schemas the validator bundles, and the newest.
KUBERNETES_VERSIONS = ("1.25.0", latest_version())
KNOWN_SETTINGS = {name for name, _, _ in describe()}
PUBLIC_PATHS = {route.path for route in app.ROUTES}
ADMIN_PATHS = {route.path for route in admin.ROUTES}
PROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]


# ------------------------------------------------------------------ Containerfile

def containerfile_stages() -> list[dict[str, Any]]:
    """The Containerfile as stages: {"name", "base", "instructions": [(KEYWORD, argument)]}."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    stages: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, argument = line.partition(" ")
        keyword, argument = keyword.upper(), argument.strip()
        if keyword == "FROM":
            base, _, name = argument.partition(" AS ")
            stages.append({"name": name.strip() or None, "base": base.strip(), "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((keyword, argument))
    return stages


def instructions(stage: dict[str, Any], keyword: str) -> list[str]:
    return [argument for kw, argument in stage["instructions"] if kw == keyword]


def copy_sources(argument: str) -> tuple[str | None, list[str], str]:
    """(the --from stage or None, the sources, the destination) of a COPY."""
    words = argument.split()
    flags = [word for word in words if word.startswith("--")]
    paths = [word for word in words if not word.startswith("--")]
    source_stage = next((flag.split("=", 1)[1] for flag in flags if flag.startswith("--from=")), None)
    return source_stage, paths[:-1], paths[-1]


def ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """.containerignore as (is_exception, regex), in order: the last match decides."""
    patterns = []
    for line in CONTAINERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        for part in re.split(r"(\*\*/?|\*|\?)", pattern):
            if part.startswith("**"):
                regex += "(?:.*/)?" if part.endswith("/") else ".*"
            elif part == "*":
                regex += "[^/]*"
            elif part == "?":
                regex += "[^/]"
            else:
                regex += re.escape(part)
        patterns.append((exception, re.compile(regex)))
    return patterns


def in_build_context(relative: str) -> bool:
    """Whether podman/buildah send this file, with .containerignore's rules (a match on any parent
    directory counts, the last matching pattern wins)."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    included = True
    for exception, regex in ignore_patterns():
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            included = exception
    return included


def files_under(path: Path) -> list[str]:
    paths = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [p.relative_to(PROJECT_ROOT).as_posix() for p in paths]


def test_containerfile_builds_wheels_in_a_builder_and_runs_slim_without_a_compiler():
    stages = containerfile_stages()
    assert len(stages) >= 2, "expected a multi-stage build"
    builder, runtime = stages[0], stages[-1]
    assert builder["name"] and runtime["name"], "name the stages (FROM … AS name)"
    assert any("pip wheel" in run for run in instructions(builder, "RUN")), "build the wheels in the builder"
    assert "slim" in runtime["base"] or runtime["base"].startswith("${"), runtime["base"]
    runtime_runs = " ".join(instructions(runtime, "RUN"))
    for tool in ("build-essential", "gcc", "pip wheel", "pip install"):
        assert tool not in runtime_runs, f"the runtime stage must not {tool!r}"


def test_containerfile_runs_chatsvc_as_a_numeric_non_root_user_and_drains_on_sigterm():
    runtime = containerfile_stages()[-1]
    users = instructions(runtime, "USER")
    assert users, "the runtime stage needs a USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER must be a numeric non-root uid, got {users[-1]!r}"
    assert not gid or (gid.isdigit() and int(gid) != 0), users[-1]
    assert [json.loads(e) for e in instructions(runtime, "ENTRYPOINT")] == [["chatsvc"]]
    assert "chatsvc" in PROJECT["scripts"], "ENTRYPOINT names the package's console script"
    assert [json.loads(c) for c in instructions(runtime, "CMD")] == [["serve"]]
    assert instructions(runtime, "STOPSIGNAL") == ["SIGTERM"]
    defaults = Settings.from_env({})
    exposed = {int(port) for line in instructions(runtime, "EXPOSE") for port in line.split()}
    assert exposed == {defaults.port, defaults.admin_port}


def test_containerfile_labels_follow_oci_and_carry_the_package_version():
    runtime = containerfile_stages()[-1]
    labels = " ".join(instructions(runtime, "LABEL"))
    for key in ("title", "description", "version", "source"):
        assert f"org.opencontainers.image.{key}=" in labels, f"missing OCI label {key}"
    assert f"VERSION={PROJECT['version']}" in instructions(runtime, "ARG"), \
        "the image's default VERSION is pyproject's version"


def test_containerfile_ships_the_migrations_where_chatsvc_migrate_looks():
    runtime = containerfile_stages()[-1]
    env = " ".join(instructions(runtime, "ENV"))
    match = re.search(r"CHATSVC_SQL_DIR=(\S+)", env)
    assert match, "set CHATSVC_SQL_DIR: the installed package has no checkout next to it"
    copies = [copy_sources(argument) for argument in instructions(runtime, "COPY")]
    assert (None, ["sql"], match.group(1)) in copies, f"COPY sql {match.group(1)} in the runtime stage"


def test_every_copied_path_exists_and_is_in_the_build_context():
    stages = containerfile_stages()
    seen_stages: set[str] = set()
    for stage in stages:
        for argument in instructions(stage, "COPY"):
            source_stage, sources, _ = copy_sources(argument)
            if source_stage is not None:
                assert source_stage in seen_stages, f"COPY --from={source_stage}: no such earlier stage"
                continue
            for source in sources:
                path = PROJECT_ROOT / source
                assert path.exists(), f"COPY {source}: no such file in the project"
                sent = [f for f in files_under(path) if in_build_context(f)]
                assert sent, f"COPY {source}: .containerignore leaves nothing of it in the build context"
        seen_stages.add(stage["name"])
    # What the build needs is sent; what it must not carry is not.
    for needed in ("pyproject.toml", "README.md", "src/chatsvc/cli.py", "sql/0001_init.sql"):
        assert in_build_context(needed), needed
    for kept_out in (".venv/bin/python", ".data/test/pg/PG_VERSION", ".git/HEAD", "tests/conftest.py",
                     "src/chatsvc/__pycache__/cli.cpython-311.pyc", "src/chatsvc.egg-info/PKG-INFO"):
        assert not in_build_context(kept_out), kept_out


# ------------------------------------------------------------------ Kubernetes manifests

def manifest_files() -> list[Path]:
    return sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def resources() -> dict[str, dict[str, Any]]:
    """Every object of the base by kind (the base has one of each)."""
    by_kind: dict[str, dict[str, Any]] = {}
    for path in manifest_files():
        for doc in load_documents(path):
            assert doc["kind"] not in by_kind, f"a second {doc['kind']} in {path.name}"
            by_kind[doc["kind"]] = doc
    return by_kind


def validate(doc: dict[str, Any]) -> None:
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("path", manifest_files(), ids=lambda path: path.name)
def test_manifest_is_valid_against_the_kubernetes_schemas(path: Path):
    docs = load_documents(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        validate(doc)


def test_the_validator_rejects_what_the_api_server_would():
    deployment = resources()["Deployment"]
    misspelt = json.loads(json.dumps(deployment))
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    wrong_type = json.loads(json.dumps(deployment))
    wrong_type["spec"]["replicas"] = "two"
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            validate(broken)


def test_kustomization_lists_every_manifest_and_tags_the_package_version():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == [path.name for path in manifest_files()]
    assert kustomization["images"] == [{"name": "chatsvc", "newTag": PROJECT["version"]}]


def test_kustomize_renders_the_base_into_valid_objects():
    kubectl = require_program("kubectl", "kubernetes-client")
    rendered = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                              timeout=60, check=False)
    assert rendered.returncode == 0, rendered.stderr
    docs = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    assert sorted(doc["kind"] for doc in docs) == sorted(resources())
    for doc in docs:
        validate(doc)
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "chatsvc"
        for container in _pod_spec(doc).get("containers", []):
            assert container["image"] == f"chatsvc:{PROJECT['version']}"


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc.get("spec", {}).get("template", {}).get("spec", {})


def container_settings(container: dict[str, Any]) -> Settings:
    """The settings chatsvc reads from this container's environment; each name must be real."""
    environ = {}
    for variable in container.get("env", []):
        name = variable["name"]
        assert name in KNOWN_SETTINGS, f"{name} is not a chatsvc setting"
        environ[name] = variable.get("value", "postgresql://from-a-secret")
    return Settings.from_env(environ)


def named_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


def api_container() -> tuple[dict[str, Any], dict[str, Any], Settings]:
    deployment = resources()["Deployment"]
    pod = _pod_spec(deployment)
    (container,) = pod["containers"]
    return pod, container, container_settings(container)


def test_deployment_rolls_one_pod_at_a_time_without_losing_capacity():
    deployment = resources()["Deployment"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}


def test_ports_are_the_ones_chatsvc_listens_on():
    _, container, settings = api_container()
    assert named_port(container, "http") == settings.port
    assert named_port(container, "admin") == settings.admin_port


def test_probes_use_routes_of_the_listener_they_reach():
    _, container, settings = api_container()
    readiness, liveness, startup = (container[f"{kind}Probe"] for kind in ("readiness", "liveness",
                                                                          "startup"))
    assert readiness["httpGet"]["path"] == "/check" and "/check" in PUBLIC_PATHS
    assert named_port(container, readiness["httpGet"]["port"]) == settings.port
    # Liveness must not depend on the database: /healthz, not /check or /readyz.
    assert liveness["httpGet"]["path"] == "/healthz" and "/healthz" in ADMIN_PATHS
    assert named_port(container, liveness["httpGet"]["port"]) == settings.admin_port
    paths = {settings.port: PUBLIC_PATHS, settings.admin_port: ADMIN_PATHS}
    assert startup["httpGet"]["path"] in paths[named_port(container, startup["httpGet"]["port"])]


def test_readiness_turns_a_draining_pod_away_within_the_drain_delay():
    _, container, settings = api_container()
    readiness = container["readinessProbe"]
    # The first failing probe starts within a period; the last one's answer (or timeout) ends it.
    noticed_within = readiness["periodSeconds"] * readiness["failureThreshold"] + readiness["timeoutSeconds"]
    assert noticed_within < settings.drain_delay, (
        f"readiness notices a draining pod only after {noticed_within} s, but chatsvc serves "
        f"with /check at 503 for only CHATSVC_DRAIN_DELAY={settings.drain_delay:g} s")


def test_grace_period_covers_pre_stop_drain_delay_and_shutdown_timeout():
    pod, container, settings = api_container()
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", command
    needed = float(command[1]) + settings.drain_delay + settings.shutdown_timeout
    assert pod["terminationGracePeriodSeconds"] > needed, (
        f"terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} must exceed preStop "
        f"{command[1]} + drain delay {settings.drain_delay:g} "
        f"+ shutdown timeout {settings.shutdown_timeout:g}")


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_pods_are_hardened_limited_and_read_the_database_url_from_a_secret(kind: str):
    pod = _pod_spec(resources()[kind])
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    runtime_user = instructions(containerfile_stages()[-1], "USER")[-1].partition(":")[0]
    assert pod["securityContext"]["runAsUser"] == int(runtime_user), "the Containerfile's USER"
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) >= {"cpu", "memory"}, f"{bound} for cpu and memory"
        (database_url,) = [v for v in container["env"] if v["name"] == "DATABASE_URL"]
        assert "value" not in database_url
        assert database_url["valueFrom"]["secretKeyRef"] == {"name": "chatsvc-database", "key": "url"}


def test_migration_job_runs_chatsvc_migrate_on_the_same_image():
    job_pod = _pod_spec(resources()["Job"])
    _, api, _ = api_container()
    (migrate,) = job_pod["containers"]
    assert migrate["args"] == ["migrate"] and api["args"] == ["serve"]
    assert migrate["image"] == api["image"]
    assert job_pod["restartPolicy"] == "Never"


def test_service_pdb_hpa_and_policy_select_the_deployment_pods():
    objects = resources()
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Service": objects["Service"]["spec"]["selector"],
        "PodDisruptionBudget": objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        "NetworkPolicy": objects["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"],
        "Deployment": objects["Deployment"]["spec"]["selector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector.items() <= pod_labels.items(), f"the {kind} selects no chatsvc pod"
    job_labels = objects["Job"]["spec"]["template"]["metadata"]["labels"]
    assert not selectors["Service"].items() <= job_labels.items(), "the Service must not route to the Job"
    _, container, settings = api_container()
    (port,) = objects["Service"]["spec"]["ports"]
    assert named_port(container, port["targetPort"]) == settings.port
    assert objects["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": objects["Deployment"]["metadata"]["name"]}
    assert hpa["minReplicas"] >= objects["Deployment"]["spec"]["replicas"]


def test_only_the_monitoring_namespace_reaches_the_admin_port():
    policy = resources()["NetworkPolicy"]["spec"]
    _, container, settings = api_container()
    assert policy["policyTypes"] == ["Ingress"]
    admin_rules = []
    for rule in policy["ingress"]:
        ports = {named_port(container, p["port"]) for p in rule.get("ports", [])}
        assert ports, "a rule without ports opens every port, the admin port included"
        if settings.admin_port in ports:
            admin_rules.append(rule)
    assert admin_rules, "nothing may scrape the admin port"
    for rule in admin_rules:
        assert rule.get("from") == [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "monitoring"}}}], rule


def test_prometheus_scrapes_the_admin_metrics_route():
    annotations = resources()["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    _, _, settings = api_container()
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == settings.admin_port
    assert annotations["prometheus.io/path"] in ADMIN_PATHS


def test_the_admin_listener_is_reachable_by_probes_and_has_no_debug_routes():
    """The probes and Prometheus use the pod address; /debug/* stays off in production."""
    _, _, settings = api_container()
    assert settings.admin_host not in ("127.0.0.1", "::1", "localhost"), settings.admin_host
    assert settings.debug_endpoints is False
