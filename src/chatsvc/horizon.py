"""The settled watermark: the largest message id below which no message can still commit.

Ids come from a sequence, so two inserts can commit out of order: 11 can be visible while 10 is
still in flight. Had a stream delivered 11, a client resuming with `Last-Event-ID: 11` would never
see 10. So an id is delivered only once it is settled. The newest id M seen in a snapshot S is
settled when every transaction in progress in S has ended: each transaction takes its xid before
its id (sql/0002's default), so whoever holds an id below M had an xid
before S and was in progress in S: listed in it, or, having taken its xid after the newest commit
(at or past S's xmax, which a snapshot does not list), among the backends' xids read right after S.
A transaction that runs long without touching `messages` (found in `pg_locks`) holds no id and is
not waited for. Xids are compared as 32-bit values, the form `pg_stat_activity` and `pg_locks` show.
"""

from __future__ import annotations

from dataclasses import dataclass

# Candidates kept at once; past it the newest is replaced, which only settles it a little later.
MAX_CANDIDATES = 256
XID32 = 0xFFFF_FFFF


def in_progress(snapshot: str) -> set[int]:
    """The xids a `pg_current_snapshot()` text ("xmin:xmax:xip,…") lists as in progress."""
    listed = snapshot.split(":")[2]
    return {int(xid) for xid in listed.split(",")} if listed else set()


@dataclass(slots=True)
class _Candidate:
    max_id: int
    waiting: set[int]  # xids in progress when `max_id` was the newest visible id
    seen_at: float
    wake_all: bool


class Horizon:
    """The settled watermark, advanced by looks at the database (pure bookkeeping, no I/O)."""

    def __init__(self) -> None:
        self.watermark = 0
        self._candidates: list[_Candidate] = []

    @property
    def pending(self) -> bool:
        return bool(self._candidates)

    def oldest_wait(self, now: float) -> float:
        return now - self._candidates[0].seen_at if self._candidates else 0.0

    def waiting(self) -> set[int]:
        return set().union(*(candidate.waiting for candidate in self._candidates))

    def observe(self, max_id: int, running: set[int], now: float,
                wake_all: bool = False) -> tuple[bool, bool]:
        """One snapshot: (the watermark moved, every stream must look)."""
        for candidate in self._candidates:
            candidate.waiting &= running
        newest = self._candidates[-1] if self._candidates else None
        if max_id > (newest.max_id if newest else self.watermark):
            candidate = _Candidate(max_id, set(running), now, wake_all)
            if len(self._candidates) >= MAX_CANDIDATES:
                # The new candidate settles every id the replaced one would have.
                replaced = self._candidates.pop()
                candidate.wake_all |= replaced.wake_all
                candidate.seen_at = replaced.seen_at
            self._candidates.append(candidate)
        elif wake_all:
            if newest is None:
                moved, _ = self._settle()
                return moved, True  # every visible id is already settled
            newest.wake_all = True
        return self._settle()

    def discard(self, xids: set[int]) -> tuple[bool, bool]:
        """Stop waiting for transactions known to hold no message id."""
        for candidate in self._candidates:
            candidate.waiting -= xids
        return self._settle()

    def _settle(self) -> tuple[bool, bool]:
        # A settled candidate settles every older one too: all ids below its own are final.
        last = max((i for i, c in enumerate(self._candidates) if not c.waiting), default=None)
        if last is None:
            return False, False
        settled, self._candidates = self._candidates[:last + 1], self._candidates[last + 1:]
        moved = settled[-1].max_id > self.watermark
        self.watermark = max(self.watermark, settled[-1].max_id)
        return moved, any(candidate.wake_all for candidate in settled)


# Ids settled without being heard of, looked up one by one up to this many; past it every stream looks.
MAX_UNANNOUNCED = 1000


class Unannounced:
    """Which settled ids were never announced (pure bookkeeping, no I/O).

    Checked at each periodic look: the ids settled by the previous one, so that an announcement
    sent right after its commit has had a whole interval to arrive. Gaps are normal (a rolled-back
    or refused send takes an id and stores nothing); looking them up finds nothing and costs one
    query per interval.
    """

    def __init__(self) -> None:
        self._checked: int | None = None  # every id up to it is checked (None: not yet started)
        self._due = 0  # the watermark at the previous check
        self._heard: set[int] = set()

    def restart(self, watermark: int) -> None:
        """Ids up to `watermark` need no check (every stream has looked since them)."""
        self._checked = self._due = watermark
        self._heard = {message_id for message_id in self._heard if message_id > watermark}

    def heard(self, message_id: int) -> None:
        if self._checked is not None and message_id > self._checked:
            self._heard.add(message_id)

    def check(self, watermark: int) -> list[int] | None:
        """The ids settled by the previous check that were never heard of; None: too many to
        list, every stream must look."""
        if self._checked is None:
            return []
        low, high = self._checked, self._due
        self._checked, self._due = high, watermark
        heard = {message_id for message_id in self._heard if message_id <= high}
        self._heard -= heard
        if high - low - len(heard) > MAX_UNANNOUNCED:
            return None
        return [message_id for message_id in range(low + 1, high + 1) if message_id not in heard]
