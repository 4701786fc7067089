"""`python -m chatsvc.ha stop DIR...`: end whatever chatsvc.ha left running under each DIR (`make clean`)."""

from __future__ import annotations

import sys
from pathlib import Path

from chatsvc.devdb import find_bindir, server_home
from chatsvc.ha.daemons import reap


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "stop":
        print("usage: python -m chatsvc.ha stop DIR...", file=sys.stderr)
        return 2
    for root in map(Path, argv[1:]):
        if root.exists():
            home, _ = server_home(root.resolve(), find_bindir())
            reap(home)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
