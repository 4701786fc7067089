"""The HA configuration files agree with each other, with the README and with the code.

deploy/ha/ is what the failover test runs (tests/live/test_failover.py); deploy/cnpg/ is the same shape
for Kubernetes, which no test can run here, so it is checked as documentation: against the
README's High availability section, the Secret that deploy/k8s reads, and chatsvc's settings.
"""

from __future__ import annotations

import configparser
import re

import yaml

from chatsvc.config import Settings
from tests import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
README = (PROJECT_ROOT / "README.md").read_text()
HA_SECTION = README.split("### High availability", 1)[1].split("\n## ", 1)[0]
DEFAULTS = Settings.from_env({})


def patroni_dcs() -> dict:
    return yaml.safe_load((DEPLOY / "ha" / "patroni.yml").read_text())["bootstrap"]["dcs"]


def pgbouncer() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=(";",))
    parser.read_string((DEPLOY / "ha" / "pgbouncer.ini").read_text())
    return parser


def cnpg(kind: str) -> dict:
    name = {"Cluster": "cluster.yaml", "Pooler": "pooler.yaml"}[kind]
    document = yaml.safe_load((DEPLOY / "cnpg" / name).read_text())
    assert document["kind"] == kind and document["apiVersion"] == "postgresql.cnpg.io/v1"
    return document


def timeouts_ms() -> dict[str, int]:
    """The server-side timeouts chatsvc sends when it connects directly (chatsvc.db.create_pool)."""
    return {"statement_timeout": int(DEFAULTS.db_timeout * 1000),
            "idle_in_transaction_session_timeout": int(DEFAULTS.db_timeout * 5000)}


def test_patroni_promotes_only_a_synchronous_standby_and_at_once():
    dcs = patroni_dcs()
    assert dcs["synchronous_mode"] is True
    assert dcs["primary_start_timeout"] == 0
    assert dcs["postgresql"]["parameters"]["synchronous_commit"] == "on"
    # Patroni's rule: the lock must outlive a loop and two retries, or a healthy leader loses it.
    assert dcs["ttl"] >= dcs["loop_wait"] + 2 * dcs["retry_timeout"]


def test_readme_tuning_table_shows_the_test_values():
    dcs = patroni_dcs()
    for name, unit in (("loop_wait", " s"), ("ttl", " s"), ("retry_timeout", " s")):
        assert f"| `{name}` | {dcs[name]}{unit} |" in HA_SECTION, name
    retry = pgbouncer()["pgbouncer"]["server_login_retry"]
    assert f"| PgBouncer `server_login_retry` | {retry} s |" in HA_SECTION


def test_pgbouncer_pools_transactions_and_sets_chatsvc_timeouts():
    config = pgbouncer()
    assert config["pgbouncer"]["pool_mode"] == "transaction"
    database = config["databases"]["chatsvc"]
    for name, value in timeouts_ms().items():
        assert f"SET {name} = {value}" in database, name


def test_cnpg_cluster_has_a_synchronous_standby_and_the_roles_timeouts():
    cluster = cnpg("Cluster")
    spec = cluster["spec"]
    assert spec["instances"] >= 2
    assert spec["minSyncReplicas"] >= 1 and spec["maxSyncReplicas"] >= spec["minSyncReplicas"]
    assert spec["bootstrap"]["initdb"]["database"] == "chatsvc"
    role_settings = " ".join(spec["bootstrap"]["initdb"]["postInitApplicationSQL"])
    for name, value in timeouts_ms().items():
        seconds = f"{value / 1000:g}s"
        assert re.search(rf"ALTER ROLE chatsvc SET {name} = '{seconds}'", role_settings), name


def test_cnpg_pooler_is_a_transaction_pooler_in_front_of_the_primary():
    cluster, pooler = cnpg("Cluster"), cnpg("Pooler")
    assert pooler["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
    assert pooler["spec"]["type"] == "rw"
    assert pooler["spec"]["pgbouncer"]["poolMode"] == "transaction"


def test_readme_secret_names_the_operators_services_and_the_deployments_keys():
    cluster, pooler = cnpg("Cluster")["metadata"]["name"], cnpg("Pooler")["metadata"]["name"]
    urls = dict(re.findall(r"--from-literal=([a-z-]+)='(postgresql://[^']+)'", HA_SECTION))
    assert set(urls) == {"url", "pooler-url"}
    assert f"@{cluster}-rw:5432/chatsvc" in urls["url"]
    assert f"@{pooler}:5432/chatsvc" in urls["pooler-url"]
    deployment = yaml.safe_load((DEPLOY / "k8s" / "deployment.yaml").read_text())
    env = {item["name"]: item for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    for setting, key in (("DATABASE_URL", "url"), ("CHATSVC_POOLER_URL", "pooler-url")):
        ref = env[setting]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("chatsvc-database", key), setting
    assert env["CHATSVC_POOLER_URL"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_haproxy_routes_by_patronis_primary_check():
    config = (DEPLOY / "ha" / "haproxy.cfg").read_text()
    assert "option httpchk GET /primary" in config
    assert "on-marked-down shutdown-sessions" in config
