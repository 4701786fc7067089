"""What the import tells its operator: progress while it runs, a summary when it ends."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

BAR_WIDTH = 30
# How many accounts, look-alike groups and skipped ids per reason the summary names; the rest are
# counted (every skipped message stays listed in the table original_import_skipped).
SHOWN = 20


class Progress:
    """A bar redrawn in place on a terminal; otherwise a plain line per batch, for logs."""

    def __init__(self, stream: TextIO, what: str, total: int) -> None:
        self._stream = stream
        self._what = what
        self._total = total
        self._done = 0
        self._started = time.monotonic()
        self._terminal = stream.isatty()

    def advance(self, count: int) -> None:
        self._done += count
        rate = self._done / max(time.monotonic() - self._started, 1e-6)
        share = self._done / self._total if self._total else 1.0
        figures = f"{self._done:,}/{self._total:,} {self._what} ({share:.0%}, {rate:,.0f}/s)"
        if self._terminal:
            filled = round(BAR_WIDTH * min(share, 1.0))
            self._stream.write(f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {figures}")
        else:
            self._stream.write(f"import-original: {figures}\n")
        self._stream.flush()

    def close(self) -> None:
        if self._terminal:
            self._stream.write("\n")
            self._stream.flush()


@dataclass
class Summary:
    """This run's counts, and what the database holds of every run of this import."""

    dry_run: bool = False
    resumed_after: tuple[int, int] = (0, 0)
    users: int = 0
    messages: Counter[str] = field(default_factory=Counter)
    skipped_now: Counter[str] = field(default_factory=Counter)
    remarks: list[tuple[int, str, str]] = field(default_factory=list)
    remark_count: int = 0
    look_alikes: list[list[str]] = field(default_factory=list)
    skipped: list[tuple[str, int, list[int]]] = field(default_factory=list)
    seconds: float = 0.0

    def remark(self, user_id: int, name: str, remark: str) -> None:
        """Note an account the operator should know about; the first few are kept by name."""
        self.remark_count += 1
        if len(self.remarks) < SHOWN:
            self.remarks.append((user_id, name, remark))

    def write(self, stream: TextIO) -> None:
        head = "import-original (dry run: nothing was written)" if self.dry_run else "import-original"
        lines = [f"{head}: done in {self.seconds:.1f} s"]
        if any(self.resumed_after):
            lines.append(f"  resumed after user id {self.resumed_after[0]} and message id "
                         f"{self.resumed_after[1]}, where an earlier run stopped")
        lines.append(f"  users: {self.users:,}")
        by_type = ", ".join(f"{kind} {count:,}" for kind, count in sorted(self.messages.items()))
        lines.append(f"  messages: {sum(self.messages.values()):,}" + (f" ({by_type})" if by_type else ""))
        lines.append(f"  skipped messages: {sum(self.skipped_now.values()):,}")
        for reason, count in (self.skipped_now.most_common() if self.dry_run else []):
            lines.append(f"    {count:,}: {reason}")
        for reason, count, examples in self.skipped:
            more = ", …" if count > len(examples) else ""
            lines.append(f"    {count:,}: {reason} (ids {', '.join(map(str, examples))}{more})")
        if self.skipped:
            lines.append("    every skipped message is listed in the table original_import_skipped")
        if self.remarks:
            lines.append("  accounts to know about:")
            lines += [f"    {user_id} {name!r}: {remark}" for user_id, name, remark in self.remarks]
            if self.remark_count > len(self.remarks):
                lines.append(f"    … and {self.remark_count - len(self.remarks):,} more")
        if self.look_alikes:
            lines.append("  names that look alike (case, width or confusable characters); each logs in "
                         "with its exact spelling:")
            lines += [f"    {', '.join(map(repr, names))}" for names in self.look_alikes]
        stream.write("\n".join(lines) + "\n")
