"""When `run --once` (and `submit` driving its own job) is finished, and with which exit code.

Owns the set of jobs a one-shot run drives (the unfinished ones found at start, those intake
records from the files present at start, or the one job `submit` names) and the grace for a
missing inbox. Reads the ledger; changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hotfolder.intake import ScanResult
from hotfolder.ledger import Ledger
from hotfolder.log import get_logger
from hotfolder.states import TERMINAL, State

log = get_logger("hotfolder.once")
EXIT_OK, EXIT_FAILED, EXIT_INBOX_MISSING = 0, 1, 3


@dataclass
class OnceRun:
    """What a one-shot run drives, and whether it is done."""

    inbox_grace: float
    jobs_only: bool = False   # `submit`: only the named jobs; the inbox does not matter
    tracked: set[int] = field(default_factory=set)
    inbox_missing_since: float | None = None

    def progress(self, ledger: Ledger, result: ScanResult, now: float, inbox: str) -> int | None:
        """The exit code once everything it drives has ended, else None."""
        if self.jobs_only:
            return self.exit_code(ledger) if self.finished(ledger) else None
        if not result.inbox_ok:
            since = self.inbox_missing_since = self.inbox_missing_since or now
            if now - since >= self.inbox_grace:
                log.error("inbox_missing_giving_up", inbox=inbox, waited_s=round(now - since, 1),
                          exit_code=EXIT_INBOX_MISSING)
                return EXIT_INBOX_MISSING
            return None
        self.inbox_missing_since = None
        if result.unsettled or not self.finished(ledger):
            return None
        return self.exit_code(ledger)

    def exit_code(self, ledger: Ledger) -> int:
        """0 when every job it drove is done, 1 when any failed or was cancelled."""
        states = [ledger.get(j).state for j in self.tracked]
        return EXIT_FAILED if any(st in (State.FAILED, State.CANCELLED) for st in states) else EXIT_OK

    def finished(self, ledger: Ledger) -> bool:
        """Every tracked job ended with its inputs moved (a video still waiting does not count)."""
        for job_id in self.tracked:
            job = ledger.get(job_id)
            if job.state == State.WAITING:
                continue
            if job.state not in TERMINAL or job.moves_pending:
                return False
        return True
