"""Prometheus metrics of the daemon, served by the listener's ``GET /metrics``.

Two kinds of numbers, kept apart on purpose:

- **events** (transitions, failures, API calls, bytes, stage times, notifications) are counted
  in this process as they happen, through hooks the daemon wires: the ledger's ``listeners``
  (:meth:`Metrics.on_transition`), the API client's ``observer`` (:meth:`Metrics.observe_call`),
  the pipeline (:meth:`Metrics.observe_bytes`, :meth:`Metrics.observe_stage`) and the notifier.
  They start at zero with each process, as Prometheus counters should (``rate()`` handles resets).
- **levels** (jobs per state, tasks in flight, the oldest queued job, the billing pause, API
  trouble, pending notifications) are read from the ledger at scrape time by a custom collector,
  so they are right even when another process (``hotfolder retry``/``cancel``) changed the
  ledger. Every read is the trigger-kept ``job_counts`` table, a key of the key/value store or an
  indexed query bounded by the work in flight: a scrape costs the same with ten jobs recorded or
  ten million.

The registry is this object's own (never prometheus_client's global one): two daemons in one
test process, or a test and a daemon, never share or collide on series. Labels only ever hold
fixed vocabularies (states, endpoint names, numeric API codes, target kinds, hotfolder error
codes), never a URL, a path, a file name or a message, so no secret can reach a scrape.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from hotfolder import __version__, log as hlog
from hotfolder.ledger import Job, Ledger, reports
from hotfolder.ledger import notices
from hotfolder.outcomes import paused_until
from hotfolder.states import State
from hotfolder.trouble import current as current_trouble

if TYPE_CHECKING:   # the client (and httpx) are not needed to build or scrape metrics
    from hotfolder.chanjing import CallRecord

log = hlog.get_logger("hotfolder.metrics")

# The text format every Prometheus understands (2.x and 3.x); generate_latest writes exactly it.
# (prometheus_client's CONTENT_TYPE_LATEST became "version=1.0.0" in 0.22, which 2.x servers
# older than 2.5x do not all recognise.)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

STAGES = ("upload", "generation", "download")
DIRECTIONS = ("upload", "download")
TROUBLE_KINDS = ("auth", "rate_limited", "unreachable")   # see hotfolder.trouble._kind
NOTIFY_TARGETS = ("webhook", "exec", "apprise")

# Buckets in seconds, chosen per stage: an API call takes tenths of a second, an upload of a
# few hundred MB minutes, a lip-sync generation minutes to hours.
API_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
STAGE_BUCKETS = {
    "upload": (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
    "generation": (30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0),
    "download": (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0),
}

# A label value taken from data (an error code) must look like a code, or it becomes "other":
# this keeps the number of series bounded and keeps any free text (which could hold a secret or
# a file name) out of the exposition.
_CODE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,40}$")


def _code(value: object, default: str = "unknown") -> str:
    if value is None or value == "":
        return default
    text = str(value)
    return text if _CODE_RE.match(text) else "other"


def api_code_label(record: CallRecord) -> str:
    """The ``code`` label of one API call.

    ``"0"`` for success and the API's own envelope codes (``"10400"``, ``"40001"``, ``"50000"``…);
    ``"http_<status>"`` when the answer was not an envelope (a gateway's 503 page, a 429, a 404:
    the client then reports the HTTP status as the code); ``"none"`` when there was no answer at
    all (connection refused, timeout, dropped connection).
    """
    if record.code is None:
        return "none" if record.http_status is None else f"http_{int(record.http_status)}"
    # The client reports a non-envelope answer's HTTP status as its code; an envelope's code
    # never equals the HTTP status it came with except for the same 4xx/5xx, which is the same story.
    if record.http_status is not None and record.code == record.http_status and record.code != 0:
        return f"http_{int(record.http_status)}"
    return _code(record.code, default="none")


class _LedgerCollector:
    """Levels read from the ledger at each scrape (see the module's docstring)."""

    def __init__(self, owner: Metrics) -> None:
        self.owner = owner

    def describe(self) -> Iterable[Metric]:
        # Declared empty on purpose: the registry would otherwise call collect() (and so read the
        # ledger) at registration. Our names cannot collide: this registry is ours alone.
        return []

    def collect(self) -> Iterator[Metric]:
        owner = self.owner
        ledger_ok = GaugeMetricFamily("hotfolder_ledger_readable",
                                      "1 when the ledger answered this scrape's queries, 0 when it failed")
        try:
            families = list(self._from_ledger())
        except Exception as exc:   # a scrape must still answer (and say the ledger failed)
            owner._scrape_failed(exc)
            families = []
            ledger_ok.add_metric([], 0)
        else:
            ledger_ok.add_metric([], 1)
            owner._last_scrape_error = None   # a later failure is news again
        yield from families
        yield ledger_ok
        dropped = CounterMetricFamily("hotfolder_log_lines_dropped",
                                      "Log lines dropped because their stream could not take them")
        dropped.add_metric([], hlog.dropped_lines())
        yield dropped
        info = GaugeMetricFamily("hotfolder_build_info", "The running hotfolder's version (always 1)",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        started = GaugeMetricFamily("hotfolder_start_time_seconds", "When this daemon started (Unix time)")
        started.add_metric([], owner.started_at)
        yield started

    def _from_ledger(self) -> Iterator[Metric]:
        owner = self.owner
        ledger = owner.ledger
        now = owner.clock()
        counts = ledger.counts()   # the trigger-kept job_counts table: no scan
        jobs = GaugeMetricFamily("hotfolder_jobs", "Jobs in the ledger per state", labels=["state"])
        for state in State:   # every state, zeros included, so series never vanish
            jobs.add_metric([str(state)], counts.get(str(state), 0))
        yield jobs
        yield GaugeMetricFamily("hotfolder_tasks_in_flight",
                                "Remote lip-sync tasks being generated now (jobs in 'generating')",
                                value=counts.get(str(State.GENERATING), 0))
        yield GaugeMetricFamily("hotfolder_videos_waiting_for_sidecar",
                                "Videos in the inbox waiting for their driver (.txt/.wav/.mp3/.m4a) sidecar",
                                value=counts.get(str(State.WAITING), 0))
        oldest = reports.oldest_created_at(ledger, str(State.QUEUED)) if counts.get(str(State.QUEUED)) else None
        yield GaugeMetricFamily("hotfolder_oldest_queued_job_age_seconds",
                                "Age of the oldest job waiting in 'queued' (0 when none waits)",
                                value=max(0.0, now - oldest) if oldest is not None else 0.0)
        yield GaugeMetricFamily("hotfolder_billing_paused",
                                "1 while submissions are paused because the account's balance or quota ran out",
                                value=1 if paused_until(ledger, now) else 0)
        trouble = current_trouble(ledger)
        kind = trouble.get("kind") if trouble else None
        api_trouble = GaugeMetricFamily("hotfolder_api_trouble",
                                        "1 for the API trouble going on now (auth, rate_limited, unreachable)",
                                        labels=["kind"])
        for name in TROUBLE_KINDS:
            api_trouble.add_metric([name], 1 if kind == name else 0)
        yield api_trouble
        yield GaugeMetricFamily("hotfolder_notifications_pending",
                                "Notifications recorded and not yet delivered nor given up",
                                value=notices.pending_count(ledger))   # partial index: pending rows only


class Metrics:
    """The daemon's metrics. Every method is thread-safe (prometheus_client's are) and cheap, and
    none raises: a metric must never break the code that reports to it.

    ``ledger`` is read at scrape time only (from whichever thread calls :meth:`render`);
    ``clock`` is wall time in seconds (the ledger's ``created_at`` is wall time too).
    """

    def __init__(self, ledger: Ledger, *, clock: Callable[[], float] = time.time,
                 process_metrics: bool = True) -> None:
        self.ledger = ledger
        self.clock = clock
        self.started_at = clock()
        self.registry = CollectorRegistry(auto_describe=False)
        reg = self.registry
        self.transitions = Counter("hotfolder_job_transitions", "Job state changes, by previous and new state "
                                   "(from=\"new\" for a job just recorded)", ["from", "to"], registry=reg)
        self.failures = Counter("hotfolder_job_failures", "Jobs that ended failed, by error code",
                                ["code"], registry=reg)
        self.video_seconds = Counter("hotfolder_video_produced_seconds",
                                     "Seconds of lip-synced video produced (jobs done, as the API reported them)",
                                     registry=reg)
        self.api_requests = Counter("hotfolder_api_requests", "Chanjing API requests, by endpoint and answer "
                                    "code (\"0\" ok, API codes, \"http_<status>\" non-API answers, \"none\" no answer)",
                                    ["endpoint", "code"], registry=reg)
        self.api_duration = Histogram("hotfolder_api_request_duration_seconds",
                                      "Time of one Chanjing API request, by endpoint", ["endpoint"],
                                      buckets=API_BUCKETS, registry=reg)
        self.bytes = {
            "upload": Counter("hotfolder_uploaded_bytes", "Bytes of inputs uploaded to the API", registry=reg),
            "download": Counter("hotfolder_downloaded_bytes", "Bytes of results downloaded from the API",
                                registry=reg),
        }
        self.stages = {
            "upload": Histogram("hotfolder_upload_duration_seconds",
                                "Time to upload a job's inputs until the API has them ready",
                                buckets=STAGE_BUCKETS["upload"], registry=reg),
            "generation": Histogram("hotfolder_generation_duration_seconds",
                                    "Time from a task's creation until the API reports it done",
                                    buckets=STAGE_BUCKETS["generation"], registry=reg),
            "download": Histogram("hotfolder_download_duration_seconds",
                                  "Time to download a job's results into the outbox",
                                  buckets=STAGE_BUCKETS["download"], registry=reg),
        }
        self.notify_given_up = Counter("hotfolder_notifications_given_up",
                                       "Notifications given up on (the receiver kept failing), by target",
                                       ["target"], registry=reg)
        self.notify_delivered = Counter("hotfolder_notifications_delivered",
                                        "Notifications delivered, by target", ["target"], registry=reg)
        for target in NOTIFY_TARGETS:   # zeros from the start: an alert on increase() needs a series
            self.notify_given_up.labels(target)
            self.notify_delivered.labels(target)
        reg.register(_LedgerCollector(self))
        if process_metrics:
            # CPU, memory, open files of this process: cheap (/proc), and what an operator looks at first.
            ProcessCollector(registry=reg)
        self._scrape_error_lock = threading.Lock()
        self._last_scrape_error: str | None = None

    # -- hooks the daemon wires -------------------------------------------------------------------
    def observe_call(self, record: CallRecord) -> None:
        """One API call (the client's ``observer``; chain it with ``ApiTrouble.record``)."""
        try:
            endpoint = _code(record.endpoint)
            self.api_requests.labels(endpoint, api_code_label(record)).inc()
            self.api_duration.labels(endpoint).observe(max(0.0, float(record.elapsed)))
        except Exception:
            log.debug("metrics_observe_call_failed", exc_info=True)

    def on_transition(self, job: Job | None, src: str | None) -> None:
        """A committed job transition or creation (the ledger's ``listeners`` hook): ``job`` as
        the transition left it, ``src`` its previous state (None for a new job)."""
        if job is None:
            return
        try:
            dst = str(job.state)
            self.transitions.labels(str(src) if src else "new", dst).inc()
            if dst == State.FAILED and src != State.FAILED:
                self.failures.labels(_code(job.error_code)).inc()
            elif dst == State.DONE and src != State.DONE and job.duration_ms:
                self.video_seconds.inc(max(0, job.duration_ms) / 1000.0)
        except Exception:
            log.debug("metrics_on_transition_failed", exc_info=True)

    def observe_bytes(self, direction: str, n: int) -> None:
        """``n`` bytes moved; ``direction`` is ``"upload"`` or ``"download"`` (anything else is ignored)."""
        counter = self.bytes.get(direction)
        try:
            if counter is not None and n > 0:
                counter.inc(n)
        except Exception:
            log.debug("metrics_observe_bytes_failed", exc_info=True)

    def observe_stage(self, stage: str, seconds: float) -> None:
        """How long one job spent in ``stage`` (``"upload"``, ``"generation"``, ``"download"``)."""
        hist = self.stages.get(stage)
        try:
            if hist is not None and seconds >= 0:
                hist.observe(seconds)
        except Exception:
            log.debug("metrics_observe_stage_failed", exc_info=True)

    def notification_given_up(self, target: str) -> None:
        """A notification to ``target`` (``webhook``, ``exec``, ``apprise``) was given up on."""
        self._notified(self.notify_given_up, target)

    def notification_delivered(self, target: str) -> None:
        """A notification to ``target`` was delivered."""
        self._notified(self.notify_delivered, target)

    @staticmethod
    def _notified(counter: Counter, target: str) -> None:
        # Only the kind of target is a label: a webhook URL or an Apprise URL may hold a password.
        counter.labels(target if target in NOTIFY_TARGETS else "other").inc()

    # -- exposition -----------------------------------------------------------------------------
    def render(self) -> tuple[bytes, str]:
        """The exposition (body, content type) for ``GET /metrics``. Reads the ledger: call it from
        a thread that may block for a few milliseconds (the listener's I/O thread)."""
        return generate_latest(self.registry), CONTENT_TYPE

    def _scrape_failed(self, exc: BaseException) -> None:
        # Logged once per distinct error, not once per scrape (every 15 s for hours otherwise).
        text = hlog.scrub(f"{type(exc).__name__}: {exc}")
        with self._scrape_error_lock:
            if text == self._last_scrape_error:
                return
            self._last_scrape_error = text
        log.warning("metrics_ledger_read_failed", error=text,
                    hint="the ledger could not be read for /metrics; see /healthz")
