"""`python -m chatsvc.ha remove DIR...`: end whatever chatsvc.ha left running under each DIR and
remove its files, also those kept under /var/tmp when PostgreSQL's user cannot reach DIR
(`make clean`)."""

from __future__ import annotations

import sys
from pathlib import Path

from chatsvc.devdb import find_bindir, server_home
from chatsvc.ha.daemons import reap, remove_root


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "remove":
        print("usage: python -m chatsvc.ha remove DIR...", file=sys.stderr)
        return 2
    for root in (Path(arg).resolve() for arg in argv[1:]):
        if root.exists():
            home, _ = server_home(root, find_bindir())
            reap(home)
            remove_root(home, root)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
