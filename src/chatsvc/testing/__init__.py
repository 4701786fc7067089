"""The live-server harness: real `chatsvc serve` processes for the test suite and the benchmarks.

One place starts servers, makes users and checks error answers, so every test and benchmark
does it the same way. It needs the development extras (httpx, pytest for `require_program`).

Databases
    `postgres_server(root)`      context manager: DATABASE_URL's server when set, else a private
                                 cluster under `root` (shared with another run already holding it).
    `DatabaseFactory(dsn)`       `await create(migrated=True)` makes a throwaway database on that
                                 server and returns its URL; `await drop_all()` drops them all.

Servers
    `free_port()`                a free loopback TCP port (from chatsvc.ports, which the runtime uses too).
    `CHEAP_HASHING`, `NO_RATE_LIMITS`, `QUIET_LOGS`
                                 settings a test server usually wants (the first is the default).
    `ServerProcess(database_url, log_path, **settings)`
                                 a `chatsvc serve` on free public and admin ports (or `port=`,
                                 `admin_port=`), with cheap password hashing unless
                                 `cheap_hashing=False`. `start()` returns once `GET /check` is 200;
                                 `stop()` sends SIGTERM, waits, then kills whatever is left of its
                                 process group and its workers. Also `url`, `admin_url`, `env`,
                                 `process`, `database_url`, `log()`, `signal()`, `wait()`,
                                 `spawn()` (start without waiting), `wait_listening(workers)`,
                                 `descendants()`. A context manager: `with ServerProcess(...)`.
    `serving(databases, log_path, **options)`
                                 async context manager: a started ServerProcess on a fresh
                                 migrated database of `databases`, stopped on the way out.
    `descendants(pid)`, `start_time(pid)`
                                 a process tree read from /proc, each pid with its start time so a
                                 reused pid is never mistaken for ours.

Users and clients
    `User`                       `id`, `username`, `password`, `token`, and `.auth` (the header).
    `sign_up_and_log_in(client)` one fresh user through `POST /users` and `POST /login`.
    `make_users(server, count)`  `count` fresh users of a server (a ServerProcess or a base URL).
    `client_for(server, user)`   an httpx.AsyncClient on the server, logged in as `user` if given.

Checks
    `assert_error(response, status, code)`
                                 the response is the error envelope: that status, JSON, an
                                 X-Request-ID, exactly {"error": {"code", "message"}} with that
                                 code (or one of a set) and a message; returns the message.
    `require_program(program, package)`
                                 the program's path; when it is missing, the test is skipped with
                                 the Debian package to install, or fails when CI=true.
"""

from chatsvc.ports import LOOPBACK, free_port
from chatsvc.testing.checks import assert_error, in_ci, media_type, require_program
from chatsvc.testing.clients import CLIENT_TIMEOUT, User, base_url, client_for, make_users, sign_up_and_log_in
from chatsvc.testing.databases import DatabaseFactory, postgres_server, with_database
from chatsvc.testing.servers import (
    CHEAP_HASHING,
    NO_RATE_LIMITS,
    QUIET_LOGS,
    READY_TIMEOUT,
    SERVE,
    STOP_TIMEOUT,
    ServerProcess,
    descendants,
    in_group,
    kill_if_same,
    serving,
    start_time,
)

__all__ = [
    "CHEAP_HASHING",
    "CLIENT_TIMEOUT",
    "LOOPBACK",
    "NO_RATE_LIMITS",
    "QUIET_LOGS",
    "READY_TIMEOUT",
    "SERVE",
    "STOP_TIMEOUT",
    "DatabaseFactory",
    "ServerProcess",
    "User",
    "assert_error",
    "base_url",
    "client_for",
    "descendants",
    "free_port",
    "in_ci",
    "in_group",
    "kill_if_same",
    "make_users",
    "media_type",
    "postgres_server",
    "require_program",
    "serving",
    "sign_up_and_log_in",
    "start_time",
    "with_database",
]
