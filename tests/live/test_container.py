"""The container image, built and run with podman: what the Deployment and the migration Job rely on.

The image is built from the Containerfile on the base `make base-image` makes from Debian's packages
(made here first when podman's storage lacks it), with this host's package index (bin/build-image).
One `chatsvc serve` container runs for the whole module as the Deployment runs it: the image's own
user, a read-only root filesystem with a tmpfs on /tmp, the Deployment's drain settings, and the
database outside the container, reached over TCP; a one-shot `chatsvc migrate` container prepares
that database first, as the migration Job does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import subprocess
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
import yaml

from chatsvc.testing import DatabaseFactory, free_port, in_ci, require_program, sign_up_and_log_in
from tests import PROJECT_ROOT
from tests.live.relay import UnixSocketRelay, over_tcp, unix_socket_of

CONTAINERS_CONF = PROJECT_ROOT / "deploy" / "podman" / "containers.conf"
BASE_IMAGE = "localhost/chatsvc-base:bookworm"
# One tag per checkout: suites of other checkouts on the machine build and remove their own.
IMAGE = f"localhost/chatsvc:test-{hashlib.sha256(bytes(PROJECT_ROOT)).hexdigest()[:12]}"
UID = 10001
# The image is the base (about 170 MB) plus chatsvc's virtual environment (about 40 MB).
SIZE_BOUND_MB = 250
# Programs that compile or install Python packages: none may be in the runtime image.
FORBIDDEN_PROGRAMS = ("cc", "gcc", "c++", "g++", "clang", "make", "pip", "pip3", "pip3.11")
STARTUP_BOUND = 60  # the Deployment's startupProbe: 60 failures, 1 s apart
DEPLOYMENT = PROJECT_ROOT / "deploy" / "k8s" / "deployment.yaml"
MIGRATION_JOB = PROJECT_ROOT / "deploy" / "k8s" / "migration-job.yaml"
PROJECT_VERSION = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]


def podman_env() -> dict[str, str]:
    """The environment with the project's podman settings, unless the caller chose others."""
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                          env=podman_env(), check=False)
    if check:
        assert done.returncode == 0, f"podman {' '.join(args)}: exit {done.returncode}\n{done.stderr}"
    return done


def report(request: pytest.FixtureRequest, line: str) -> None:
    """Print a measured figure in the test output, also when output is captured."""
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"\n{line}")


def deployment() -> tuple[dict[str, Any], dict[str, Any]]:
    """The Deployment's pod spec and its container."""
    pod = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def deployment_settings() -> dict[str, str]:
    """The CHATSVC_* values the Deployment sets (the ports are chosen here instead: host network)."""
    _, container = deployment()
    return {v["name"]: v["value"] for v in container["env"]
            if "value" in v and v["name"] not in ("CHATSVC_PORT", "CHATSVC_ADMIN_PORT")}


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def image() -> str:
    """The image, built (from the cached base and build layers, so usually in seconds)."""
    for program, package in (("podman", "podman"), ("runc", "runc"), ("debootstrap", "debootstrap")):
        require_program(program, package)
    if os.geteuid() != 0:
        reason = "podman runs containers as root on these machines, and debootstrap needs root"
        if in_ci():
            pytest.fail(f"CI=true: {reason}", pytrace=False)
        pytest.skip(reason)
    built = subprocess.run([str(PROJECT_ROOT / "bin" / "build-image"), "--base", BASE_IMAGE, "--tag", IMAGE],
                           capture_output=True, text=True, timeout=1200, env=podman_env(), check=False)
    assert built.returncode == 0, f"bin/build-image failed:\n{built.stdout[-4000:]}\n{built.stderr[-4000:]}"
    return IMAGE


@pytest.fixture(scope="module")
async def database(databases: DatabaseFactory) -> AsyncIterator[tuple[str, str]]:
    """(the URL the container uses, over TCP; the same database for the test, as the suite reaches it)."""
    url = await databases.create()
    socket_path = unix_socket_of(url)
    if socket_path is None:  # DATABASE_URL is a TCP URL already
        yield url, url
        return
    with UnixSocketRelay(socket_path) as relay:
        yield over_tcp(url, relay.port), url


@dataclass
class Container:
    name: str
    port: int
    admin_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def inspect(self, template: str) -> str:
        return podman("inspect", "--format", template, self.name).stdout.strip()

    def exec(self, script: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, "sh", "-c", script, check=False, timeout=30)

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr


def run_migrate(image: str, database_url: str) -> subprocess.CompletedProcess[str]:
    """`chatsvc migrate` as a one-shot container, hardened as the migration Job's pod is."""
    return podman("run", "--rm", "--name", f"chatsvc-test-migrate-{secrets.token_hex(4)}",
                  "--read-only", "--read-only-tmpfs=false", "--cap-drop=ALL",
                  "--security-opt=no-new-privileges", "--env", f"DATABASE_URL={database_url}",
                  image, "migrate", check=False, timeout=120)


@pytest.fixture(scope="module")
def migrated(image: str, database: tuple[str, str]) -> subprocess.CompletedProcess[str]:
    container_url, _ = database
    return run_migrate(image, container_url)


@pytest.fixture(scope="module")
def container(image: str, database: tuple[str, str], migrated: subprocess.CompletedProcess[str]
              ) -> Iterator[Container]:
    """`chatsvc serve` in the image as the Deployment runs it, ready; removed at the end."""
    assert migrated.returncode == 0, f"chatsvc migrate failed:\n{migrated.stdout}{migrated.stderr}"
    container_url, _ = database
    served = Container(f"chatsvc-test-{secrets.token_hex(4)}", free_port(), free_port())
    settings = {
        **deployment_settings(),
        "DATABASE_URL": container_url,
        "CHATSVC_HOST": "127.0.0.1",  # host network: loopback only, as a pod's are its own
        "CHATSVC_PORT": str(served.port),
        "CHATSVC_ADMIN_PORT": str(served.admin_port),
        # Two workers: their shared metrics directory is in /tmp, the one writable path.
        "CHATSVC_WORKERS": "2",
        "CHATSVC_ARGON2_TIME_COST": "1",
        "CHATSVC_ARGON2_MEMORY_KIB": "64",
    }
    env_args = [arg for name, value in settings.items() for arg in ("--env", f"{name}={value}")]
    podman("run", "--detach", "--name", served.name,
           # As the Deployment's securityContext and its one emptyDir volume on /tmp.
           "--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,size=64m,mode=1777",
           "--cap-drop=ALL", "--security-opt=no-new-privileges", *env_args, image, "serve")
    try:
        wait_until_ready(served)
        yield served
    finally:
        podman("rm", "--force", "--time", "0", served.name, check=False)


def wait_until_ready(container: Container) -> None:
    deadline = time.monotonic() + STARTUP_BOUND
    while time.monotonic() < deadline:
        if container.inspect("{{.State.Running}}") != "true":
            pytest.fail(f"the container exited:\n{container.logs()[-4000:]}")
        try:
            if httpx.get(container.url + "/check", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the container was not ready in {STARTUP_BOUND} s:\n{container.logs()[-4000:]}")


# --------------------------------------------------------------------------- the image

def test_the_image_is_small_and_carries_nothing_of_the_build_host(image: str,
                                                                   request: pytest.FixtureRequest):
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout)
    base = int(podman("image", "inspect", "--format", "{{.Size}}", BASE_IMAGE).stdout)
    report(request, f"image {image}: {size / 1e6:.0f} MB ({(size - base) / 1e6:.0f} MB over the base "
                    f"{BASE_IMAGE}, {base / 1e6:.0f} MB); bound {SIZE_BOUND_MB} MB")
    assert size < SIZE_BOUND_MB * 1_000_000, f"{size / 1e6:.0f} MB"
    # The package index, its CA and the mounted index directories were the builder stage's only.
    config = podman("image", "inspect", "--format", "{{json .Config.Env}} {{json .Config.Labels}}",
                    image).stdout
    history = podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    for trace in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CERT", "file://"):
        assert trace not in config, f"{trace} in the image's configuration"
        assert trace not in history, f"{trace} in the image's history"


def test_the_built_image_is_what_the_deployment_and_the_job_expect(image: str):
    config = json.loads(podman("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    pod, container = deployment()
    assert config["User"] == f"{UID}:{UID}"
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["runAsGroup"] == UID
    assert set(config["ExposedPorts"]) == {f"{port['containerPort']}/tcp" for port in container["ports"]}
    assert config["StopSignal"] == "SIGTERM"  # what kubelet sends; the drain starts on it
    assert config["Entrypoint"] == ["chatsvc"] and config["Cmd"] == container["args"] == ["serve"]
    job = yaml.safe_load(MIGRATION_JOB.read_text())["spec"]["template"]["spec"]
    assert job["containers"][0]["args"] == ["migrate"]
    assert config["Labels"]["org.opencontainers.image.version"] == PROJECT_VERSION


def test_migrate_runs_as_a_one_shot_container_against_the_database_outside(
        image: str, database: tuple[str, str], migrated: subprocess.CompletedProcess[str]):
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    again = run_migrate(image, database[0])
    assert again.returncode == 0, again.stdout + again.stderr


async def test_the_migrations_are_applied(container: Container, database: tuple[str, str]):
    connection = await asyncpg.connect(database[1])
    try:
        applied = await connection.fetchval("SELECT count(*) FROM schema_migrations")
    finally:
        await connection.close()
    assert applied == len(list((PROJECT_ROOT / "sql").glob("*.sql")))


# --------------------------------------------------------------------------- the running container

async def test_it_serves_the_api_and_the_probes(container: Container):
    with container_log_on_failure(container):
        await serves_the_api_and_the_probes(container)


async def serves_the_api_and_the_probes(container: Container) -> None:
    async with httpx.AsyncClient(base_url=container.url, timeout=10) as client:
        check = await client.get("/check")
        assert (check.status_code, check.text) == (200, "ok")
        alice = await sign_up_and_log_in(client)
        bob = await sign_up_and_log_in(client)
        sent = await client.post("/messages", headers=alice.auth, json={
            "recipient": bob.id, "content": {"type": "text", "text": "from a container"}})
        assert sent.status_code == 201, sent.text
        listed = await client.get("/messages", headers=bob.auth, params={"recipient": bob.id, "start": 0})
        assert [m["content"]["text"] for m in listed.json()["messages"]] == ["from a container"]
    async with httpx.AsyncClient(base_url=container.admin_url, timeout=10) as admin:
        assert (await admin.get("/healthz")).json() == {"status": "ok"}
        assert (await admin.get("/readyz")).json() == {"status": "ready"}
        # The other worker writes its counts every CHATSVC_METRICS_FLUSH_INTERVAL (1 s): a
        # scrape answered by this one sees the POST within moments (bounded, for a failure).
        deadline = time.monotonic() + 30
        posted = 'chatsvc_http_requests_total{method="POST",route="/messages",status="201"}'
        for _ in range(300):
            if posted in (metrics := (await admin.get("/metrics")).text) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    assert posted in metrics, metrics


def test_it_runs_as_uid_10001_on_a_read_only_root_with_a_writable_tmp(container: Container):
    # Every process of the container (the supervisor and its workers), as the host sees them.
    table = podman("top", container.name, "pid", "huser", "user").stdout.splitlines()[1:]
    assert len(table) >= 3, table
    for row in table:
        pid, host_user, user = row.split()
        assert (host_user, user) == (str(UID), "chatsvc"), f"process {pid} runs as {host_user}/{user}"
    assert container.inspect("{{.HostConfig.ReadonlyRootfs}}") == "true"
    refused = container.exec("touch /opt/chatsvc/written && echo written")
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr, refused
    tmp = container.exec("touch /tmp/written && echo written")
    assert tmp.stdout.strip() == "written", tmp.stderr


def test_the_runtime_image_has_no_compiler_and_no_pip(container: Container):
    found = container.exec("for p in " + " ".join(FORBIDDEN_PROGRAMS) + "; do command -v $p; done; true")
    assert found.stdout.strip() == "", f"found in the image: {found.stdout.split()}"
    for python in ("python3", "/opt/chatsvc/bin/python"):
        spec = container.exec(f"{python} -c 'import importlib.util as u; print(u.find_spec(\"pip\"))'")
        assert spec.stdout.strip() == "None", (python, spec.stdout, spec.stderr)
    wheels = container.exec("ls /usr/share/python-wheels 2>/dev/null; true")
    assert wheels.stdout.strip() == "", f"wheels that put pip into a venv: {wheels.stdout.split()}"


async def test_podman_stop_drains_and_exits_0_within_the_grace_period(container: Container,
                                                                       request: pytest.FixtureRequest):
    """Last in the module: it ends the container."""
    pod, _ = deployment()
    grace = pod["terminationGracePeriodSeconds"]
    with container_log_on_failure(container):
        async with httpx.AsyncClient(base_url=container.url, timeout=10) as client:
            user = await sign_up_and_log_in(client)
    async with httpx.AsyncClient(base_url=container.url, timeout=10) as client:
        stopped_at = time.monotonic()
        # The image's STOPSIGNAL (SIGTERM), then SIGKILL if the grace period runs out, as kubelet does.
        stopping = asyncio.create_task(asyncio.to_thread(
            podman, "stop", "--time", str(grace), container.name, timeout=grace + 30))
        # However slowly podman gets the signal there, the drain is seen before the container ends.
        check = await wait_for_check(client, 503, bound=grace)
        assert check.json()["error"]["code"] == "unavailable", check.text
        # Draining, and still serving: load balancers are only now noticing.
        served = await client.get("/messages", headers=user.auth, params={"recipient": user.id, "start": 0})
        assert served.status_code == 200, served.text
        await stopping
    elapsed = time.monotonic() - stopped_at
    report(request, f"podman stop: exited after {elapsed:.1f} s of a {grace} s grace period")
    assert container.inspect("{{.State.Running}}") == "false"
    # Exit status 0, not 137: it ended by its own drain, before the grace period's SIGKILL.
    assert container.inspect("{{.State.ExitCode}}") == "0", container.logs()[-4000:]
    assert "draining" in container.logs()


# --------------------------------------------------------------------------- helpers

@contextlib.contextmanager
def container_log_on_failure(container: Container) -> Iterator[None]:
    """A failed assertion (a 500, say) carries the container's log, which says why."""
    try:
        yield
    except AssertionError as failure:
        raise AssertionError(f"{failure}\ncontainer log:\n{container.logs()[-4000:]}") from failure


async def wait_for_check(client: httpx.AsyncClient, status: int, bound: float) -> httpx.Response:
    deadline = time.monotonic() + bound
    while True:
        response = await client.get("/check")
        if response.status_code == status or time.monotonic() > deadline:
            assert response.status_code == status, f"/check answered {response.status_code}"
            return response
        await asyncio.sleep(0.05)
