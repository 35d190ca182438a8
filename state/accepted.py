"""Messages the mail server accepted, written down before the outbox row is marked sent.

Between the server's "250 accepted" and the commit that marks the row sent, a SIGKILL leaves a
delivered message pending, and the next flush sends it again. In the daemon that commit can wait
tens of milliseconds for SQLite's write lock while a check writes (50 daemon kill trials: 2
messages went out twice that way). One append to this file takes microseconds, and what the
process wrote survives it being killed (the kernel's page cache keeps it). Every flush first marks
sent what the file lists. No fsync per message: an operating-system crash can still lose the last
lines, a window SMTP itself cannot close; the stable Message-ID lets a receiver drop such a copy.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path


class AcceptedJournal:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def record(self, message_id: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, message_id.encode("ascii", "replace") + b"\n")
        finally:
            os.close(fd)

    def take(self) -> tuple[list[str], list[Path]]:
        """The Message-IDs written down so far, and the files that hold them: delete those with
        `done` once the database has them. The journal is renamed first, so a sender appending
        meanwhile starts a new one; files a failed reconciliation left behind are read again."""
        if self.path.exists():
            try:
                self.path.rename(self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex}.taken"))
            except FileNotFoundError:       # another process took it first
                pass
        taken = sorted(self.path.parent.glob(f"{self.path.name}.*.taken"))
        ids: list[str] = []
        for file in taken:
            try:
                ids += [line for line in file.read_text("ascii", "replace").splitlines() if line.strip()]
            except FileNotFoundError:
                continue
        return ids, taken

    def waiting(self) -> bool:
        """Whether anything is written down that a flush must reconcile (only looks)."""
        return self.path.exists() or any(self.path.parent.glob(f"{self.path.name}.*.taken"))

    @staticmethod
    def done(files: list[Path]) -> None:
        for file in files:
            file.unlink(missing_ok=True)
