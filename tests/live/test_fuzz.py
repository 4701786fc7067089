"""Schemathesis against a real `chatsvc serve`: every operation of the served /openapi.json, fuzzed.

The schema is loaded from the live server, so what is fuzzed is what is served. Every response
must come without a 5xx and conform to the document: a documented status code and content type,
a body and headers that match its schema; a method the document does not list must be 405 with
`Allow`. Authenticated operations carry a real token (a fresh one for `POST /logout` and
`POST /logout/all`, which revoke what they are given); negative cases drop or break it, and then
401 is what conforms.
Event streams are left out: a valid request is answered until the client leaves.

Generation is derandomized with a fixed seed, so CI tries the same cases every run.
`CHATSVC_FUZZ_EXAMPLES` sets the examples per operation: the suite's default (100, enough for
every operation to get past validation and authentication, as test_every_operation_was_fuzzed
checks) keeps this file well under a minute on two cores; `make fuzz` asks for 2000. The cases
run per operation, and the statuses they got, are printed at the end.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from chatsvc.testing import (
    NO_RATE_LIMITS,
    QUIET_LOGS,
    DatabaseFactory,
    ServerProcess,
    User,
    make_users,
    serving,
)

EXAMPLES = int(os.environ.get("CHATSVC_FUZZ_EXAMPLES", "100"))
SEED = int(os.environ.get("CHATSVC_FUZZ_SEED", "20261124"))
REQUEST_TIMEOUT = 10
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance, unsupported_method]
SETTINGS = {
    # Rate limiting would only turn generated requests into 429s.
    **NO_RATE_LIMITS,
    "CHATSVC_DRAIN_DELAY": "0",
    **QUIET_LOGS,
}

# Filled by the fixtures; read by the auth provider, which Schemathesis makes without arguments.
_session: dict[str, object] = {}
cases: Counter[str] = Counter()
statuses: Counter[tuple[str, int]] = Counter()


@pytest.fixture(scope="module")
async def live_server(databases: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
                      ) -> AsyncIterator[ServerProcess]:
    """A `chatsvc serve` on a fresh migrated database, with users 1 and 2 signed up."""
    async with serving(databases, tmp_path_factory.mktemp("fuzz") / "serve.log", **SETTINGS) as server:
        # Fresh database: these are users 1 and 2, the ids generated data is most likely to name.
        user, other = await make_users(server, 2, timeout=REQUEST_TIMEOUT)
        _session.update(url=server.url, user=user, other=other)
        try:
            yield server
        finally:
            _session.clear()


@pytest.fixture(scope="module")
def api_schema(live_server: ServerProcess) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "generation": {"max-examples": EXAMPLES, "deterministic": True, "database": "none"},
    })
    return schemathesis.openapi.from_url(live_server.url + "/openapi.json", config=config)


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture(scope="module", autouse=True)
def report(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the cases run per operation and the statuses seen, even when output is captured."""
    yield
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is None or capture is None or not cases:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_sep("-", f"fuzzing: {cases.total()} cases, {EXAMPLES} examples per operation, "
                                f"seed {SEED}")
        for label, count in sorted(cases.items()):
            seen = ", ".join(f"{status}: {n}" for (op, status), n in sorted(statuses.items())
                             if op == label)
            reporter.write_line(f"  {label:<18} {count:>6} cases   {seen}")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # Schemathesis 4.32 reads and relabels `Node._nodeid`, which pytest 9.2 no longer has.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


def streams_forever(operation: dict) -> bool:
    """An event stream answers until the client leaves; a generated request would only time out."""
    return any("text/event-stream" in response.get("content", {})
               for response in operation.get("responses", {}).values())


schema = schemathesis.pytest.from_fixture("api_schema").exclude(
    func=lambda context: streams_forever(context.operation.definition.raw))


# Operations that revoke the token they are given, or all of its user's: each case logs in afresh,
# as the other user when every session of the user ends.
REVOKING = {"POST /logout": "user", "POST /logout/all": "other"}


@schema.auth(refresh_interval=None)
class SessionToken:
    """The fuzzing user's token on operations that require one; a fresh one for each logout."""

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str | None:
        if not case.operation.definition.raw.get("security"):
            return None
        if case.operation.label in REVOKING:
            user: User = _session[REVOKING[case.operation.label]]  # type: ignore[assignment]
            login = requests.post(f"{_session['url']}/login", timeout=REQUEST_TIMEOUT,
                                  json={"username": user.username, "password": user.password})
            login.raise_for_status()
            return login.json()["token"]
        return _session["user"].token  # type: ignore[union-attr]

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schema.parametrize()
def test_every_response_conforms(case: schemathesis.Case, http: requests.Session) -> None:
    cases[case.operation.label] += 1
    response = case.call_and_validate(session=http, checks=CHECKS, timeout=REQUEST_TIMEOUT)
    statuses[case.operation.label, response.status_code] += 1


def test_every_operation_was_fuzzed(live_server: ServerProcess) -> None:
    """The run above reached each operation, and the authenticated ones got past authentication."""
    if not cases:
        pytest.skip("counts come from test_every_response_conforms, which did not run")
    served = httpx.get(live_server.url + "/openapi.json").json()["paths"]
    # Schemathesis leaves out the operation that serves the document, and event streams are left out
    # above; test_openapi_responses.py checks what they answer.
    labels = {f"{method.upper()} {path}" for path, item in served.items()
              for method, operation in item.items()
              if path != "/openapi.json" and not streams_forever(operation)}
    assert labels <= set(cases), f"never fuzzed: {sorted(labels - set(cases))}"
    for label, status in [("POST /messages", 201), ("GET /messages", 200), ("POST /logout", 204),
                          ("POST /users", 201), ("POST /logout/all", 204), ("GET /conversations", 200),
                          ("GET /sessions", 200), ("GET /users/me", 200)]:
        assert statuses[label, status] > 0, f"{label} never answered {status}: {dict(statuses)}"
