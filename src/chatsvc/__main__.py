"""`python -m chatsvc` is the `chatsvc` command."""

import sys

from chatsvc.cli import main

sys.exit(main())
