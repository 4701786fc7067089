"""`python -m chatsvc.bench.login_flood`: a real login's latency while a flood of logins arrives.

Each round sends `--flood` concurrent logins, each from another address (`X-Forwarded-For`, trusted
from loopback), and 20 ms later one real login of another account, and times that login. Two
floods: wrong passwords for one account (password guessing), and logins of names no account has
(no per-account count can stop those; only the bounded hash queue does). The server runs with the
production argon2 cost on a private throwaway PostgreSQL. `--unbounded` turns the per-account
throttle and the hash-queue bound off, which is how chatsvc behaved before them.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from chatsvc.bench.options import DATA
from chatsvc.testing import DatabaseFactory, ServerProcess, make_users, postgres_server

UNBOUNDED = {"CHATSVC_HASH_QUEUE": "100000", "CHATSVC_LOGIN_FAILURES": "1000000"}
REAL_LOGIN_DELAY = 0.02


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatsvc.bench.login_flood", description=__doc__)
    parser.add_argument("--flood", type=int, default=40, help="concurrent logins per round (40)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per kind of flood (5)")
    parser.add_argument("--unbounded", action="store_true", help="throttle and queue bound off")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="more environment for the server, e.g. PYTHONPATH=<an older checkout>/src "
                             "to measure that release")
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.env)
    with postgres_server(DATA / "login-flood") as server_dsn:
        asyncio.run(_measure(server_dsn, args.flood, args.rounds, args.unbounded, extra))
    return 0


async def _measure(server_dsn: str, flood: int, rounds: int, unbounded: bool,
                   extra: dict[str, str]) -> None:
    databases = DatabaseFactory(server_dsn, prefix="chatsvc_login_flood")
    url = await databases.create(migrated=True)
    # The per-address limits stay out of it: every flood login comes from an address of its own.
    settings = {"CHATSVC_TRUSTED_PROXIES": "127.0.0.1", "CHATSVC_RATE": "0", "CHATSVC_AUTH_RATE": "0",
                "CHATSVC_ACCESS_LOG": "false",
                **(UNBOUNDED if unbounded else {}), **extra}
    log = Path(tempfile.mkdtemp(prefix="chatsvc-login-flood-")) / "serve.log"
    try:
        # mypy cannot tell that no CHATSVC_* name is one of the typed keywords (port, argv, …).
        with ServerProcess(url, log, cheap_hashing=False, **settings) as server:  # type: ignore[arg-type]
            users = await make_users(server, rounds + 1, timeout=60)
            real = users[0]
            async with httpx.AsyncClient(base_url=server.url, timeout=120,
                                         limits=httpx.Limits(max_connections=flood + 10)) as client:
                for kind in ("one account, wrong passwords", "names no account has"):
                    seconds, statuses = [], []
                    for round_ in range(rounds):
                        victim = users[1 + round_].username
                        names = ([victim] * flood if kind.startswith("one")
                                 else [f"nobody-{secrets.token_hex(4)}" for _ in range(flood)])
                        flood_tasks = [asyncio.create_task(_login(client, name, "wrong guess"))
                                       for name in names]
                        await asyncio.sleep(REAL_LOGIN_DELAY)
                        started = time.perf_counter()
                        answer = await _login(client, real.username, real.password)
                        seconds.append(time.perf_counter() - started)
                        statuses += [task.status_code for task in await asyncio.gather(*flood_tasks)]
                        assert answer.status_code in (200, 503), answer.text
                        statuses.append(answer.status_code)
                        await asyncio.sleep(1)  # let the hash threads drain between rounds
                    counts = {status: statuses.count(status) for status in sorted(set(statuses))}
                    label = "unbounded" if unbounded else "bounded"
                    print(f"{label}{' ' + str(extra) if extra else ''}; {flood} logins, {kind}: real login "
                          f"median {statistics.median(seconds):.3f} s, max {max(seconds):.3f} s "
                          f"over {rounds} rounds; statuses {counts}", flush=True)
    finally:
        await databases.drop_all()


async def _login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    address = f"198.18.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"
    return await client.post("/login", json={"username": username, "password": password},
                             headers={"X-Forwarded-For": address})


if __name__ == "__main__":
    raise SystemExit(main())
