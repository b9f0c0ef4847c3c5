"""The ledger: the single source of truth, and the only code that runs SQL.

:mod:`.core` holds the :class:`Ledger` and its verbs (every job transition, the upload cache, the
key/value store); :mod:`.reports` the read-side queries whose cost must stay bounded however
long the history grows (status listings that stream, recent history, statistics, pruning).
"""

from hotfolder.ledger.core import (BUSY_TIMEOUT_S, NETWORK_FS, AmbiguousRef, Job, Ledger,
                                   filesystem_type)
from hotfolder.ledger import reports

__all__ = ["BUSY_TIMEOUT_S", "NETWORK_FS", "AmbiguousRef", "Job", "Ledger", "filesystem_type", "reports"]
