"""`make bench`: chatsvc under wrk, the same SQL under pgbench, Hypercorn against uvicorn, fan-out.

    python -m chatsvc.bench                 every section of BENCHMARKS.md but the growth (~15 min)
    python -m chatsvc.bench --scale         the growth section: GET /messages and the conversation
                                            routes with 10 thousand and with 10 million messages
                                            (make bench-scale, ~20 min)
    python -m chatsvc.bench --fanout-only   the fan-out section alone
    python -m chatsvc.bench --smoke         every part in a minute or two, into .data/bench/smoke.md

A private PostgreSQL runs under .data/bench (data, logs, the generated wrk data file); every
process started here is stopped on exit, on failure and on Ctrl-C too. Each option can be set in
the environment: BENCH_SECONDS (15) per measured run, BENCH_WARMUP (5), BENCH_RUNS (2),
BENCH_CONNECTIONS (32), BENCH_USERS (5000), BENCH_MESSAGES (1000000), BENCH_SCENARIOS
(check,post,get,login,mix), BENCH_OUTPUT (BENCHMARKS.md) and the rest of options.Options.

The parts, in the order a run uses them:

    options   what is measured and how long, the scenarios, where files go
    data      the private cluster and the prefilled databases
    servers   `chatsvc serve` at production settings, and uvicorn for comparison
    load      wrk and the Lua scripts of lua/; CPU and memory of each run (procfs)
    pgbench   the limit: the routes' own SQL under pgbench
    routes    the main benchmark;  scale: the growth one;  fanout: stream fan-out latency
    report    BENCHMARKS.md: tables.py writes the tables, templates/report.md holds the prose
"""
