"""One benchmark run: the real exporter daemon against the fake API, measured against the limits.

Each in its own process (the machine's cores are shared: the fake's CPU must not be charged to
the exporter, nor share its event loop):

1. the fake vendor API on aiohttp's server, ``--fake-workers`` processes on one port
   (``python -m exporter.fakeapi --record``: one line per request answered, written when it stops);
2. the exporter (``python -m exporter``) with a generated config of N accounts x W windows, keys
   passed in environment variables, ``max_concurrency: C``, ``--debug.loop-lag``, and the event
   loop chosen with ``RETARGETING_EXPORTER_EVENT_LOOP`` (``--event-loop``).

What it measures, and how:

- start-up cycle: every account is polled at once. Measured inside the exporter from its own
  metrics: from the earliest poll start (``retargeting_last_success_timestamp_seconds -
  retargeting_poll_duration_seconds``) to the latest poll end, compared with the bound N·W·L/C.
  "Every account polled" means every account reports ``retargeting_up 1`` and made W requests.
  The cycle as seen from outside (first answer of ``/-/healthy`` to the first 200 of
  ``/-/ready``) is reported alongside. During it, a gzip scrape every ``--poll-scrape-every`` s.
- CPU seconds (``/proc/PID/stat``) of the exporter and of the fake's processes over the cycle,
  and of every other process (``/proc/stat``); peak RSS (``VmHWM``).
- ``/metrics`` when nothing changed (``--scrapes``, after the cycle, once the lag window has
  forgotten it): sequential scrapes on one kept-alive connection, time to the last byte, plain
  and gzip; body sizes.
- event-loop lag: ``retargeting_exporter_event_loop_lag_seconds`` (the longest timer delay in a
  sliding window of ``--lag-window`` s), read from every scrape.
- steady phase (``--steady-intervals K``): K whole polling intervals, starting at the first
  ``start + interval/2 + k·interval`` after the start-up cycle (each account's later polls come
  at its own phase of the interval, from ``interval/2`` on). A gzip scrape every
  ``--steady-every`` s (as Prometheus would); the exporter's CPU as a share of one core and per
  API request, its RSS (median of the samples taken at each scrape) and peak; and from the
  fake's records (``bench/traffic.py``): requests per second (the busiest second against the
  mean) and how many times each account was polled in each interval.

Correctness is checked on every run (the exposition is parsed with ``prometheus_client``'s
parser; every family has the expected number of samples); problems are listed, and the exit
code is 1 if there are any. Timings are reported, never judged.
"""

from __future__ import annotations

import gzip
import http.client
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.traffic import SteadyTraffic, read_records, steady_traffic
from exporter import eventloop, metrics
from exporter.errors import ApiErrorReason
from exporter.selfmetrics import (
    ACCOUNT_FILE_OK,
    HTTP_REJECT_REASONS,
    HTTP_REJECTED,
    OUTCOMES,
    REQUEST_DURATION,
)
from exporter.yamlcheck import parse_duration

REPO = Path(__file__).resolve().parent.parent
WINDOW_CHOICES = ("24h", "30d", "7d", "1h")
SOURCES_PER_ACCOUNT = 4  # the fake's generated accounts report the four documented sources
LAG_METRIC = "retargeting_exporter_event_loop_lag_seconds"
EVENT_LOOPS = ("uvloop", "asyncio")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Settings:
    """One run's parameters (``bench.cli.SCENARIOS`` names the usual ones)."""

    accounts: int
    windows: int = 2
    latency: float = 0.05
    fake_workers: int = 2  # processes of the fake API on one port
    concurrency: int = 200
    interval: str = "5m"
    scrapes: int = 20  # timed scrapes per encoding when nothing changed (0: none)
    poll_scrape_every: float = 5.0
    lag_window: float = 10.0
    steady_intervals: int = 0  # whole polling intervals of steady phase (0: none)
    steady_every: float = 15.0
    event_loop: str = "uvloop"  # the exporter's: uvloop or asyncio
    workdir: Path | None = None  # keep configs, logs and records here (default: a temporary one)
    profile: Path | None = None  # write py-spy profiles here

    @property
    def bound(self) -> float:
        """The least time a full poll cycle can take: N·W·L/C."""
        return self.accounts * self.windows * self.latency / self.concurrency

    @property
    def interval_seconds(self) -> float:
        return parse_duration(self.interval)

    @property
    def keys(self) -> list[str]:
        """The rest keys of the generated accounts (the fake's ``generated_accounts``)."""
        return [f"key-{i:05d}" for i in range(self.accounts)]


@dataclass
class Timings:
    median: float = math.nan
    p99: float = math.nan
    size: int = 0

    @classmethod
    def of(cls, seconds: list[float], size: int) -> Timings:
        if not seconds:
            return cls(size=size)
        ordered = sorted(seconds)
        p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
        return cls(statistics.median(ordered), p99, size)


@dataclass
class Steady:
    """The steady phase's figures."""

    cpu: float = math.nan  # exporter CPU seconds per second (share of one core)
    cpu_per_request: float = math.nan  # exporter CPU seconds per API request
    fake_cpu: float = math.nan  # the fake's CPU seconds per second
    rss: int = 0  # bytes, median VmRSS of the samples
    scrape_gzip: Timings = field(default_factory=Timings)
    lag: float = math.nan
    traffic: SteadyTraffic | None = None


@dataclass
class Result:
    settings: Settings
    event_loop: str = ""  # as the exporter's "listening" log line names it
    requests: int = 0
    cycle: float = math.nan  # inside the exporter: first poll start to last poll end
    cycle_outside: float = math.nan  # first /-/healthy answer to first /-/ready 200
    cycle_cpu: float = math.nan  # exporter CPU seconds over the cycle
    accounts_polled: int = 0
    failed_attempts: int = 0  # retargeting_errors_total after the cycle
    scrape_raw: Timings = field(default_factory=Timings)
    scrape_gzip: Timings = field(default_factory=Timings)
    scrape_during_poll: Timings = field(default_factory=Timings)
    lag_polling: float = math.nan
    lag_scraping: float = math.nan
    fake_cpu: float = math.nan  # the fake API's CPU seconds over the cycle
    other_cpu: float = math.nan  # every other process's CPU seconds over the cycle
    peak_rss: int = 0  # bytes (VmHWM at the end)
    samples: int = 0
    steady: Steady | None = None
    problems: list[str] = field(default_factory=list)
    cycles: list[float] = field(default_factory=list)  # every run's cycle (with --repeat)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def ratio(self) -> float:
        return self.cycle / self.settings.bound

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        out["settings"]["workdir"] = None
        out["settings"]["profile"] = None
        out["settings"]["bound"] = self.settings.bound
        out["ok"] = self.ok
        return out


# -- processes --------------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """``count`` different free ports: their sockets stay bound until all are chosen (one at
    a time, the kernel may hand out the same port twice: it did, and the exporter then
    could not listen on the fake's port)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def free_port() -> int:
    return free_ports(1)[0]


@contextmanager
def process(
    args: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process (output to ``log``), stopped with SIGTERM (then SIGKILL) afterwards."""
    with log.open("wb") as out:
        child = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield child
        finally:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()


@contextmanager
def profiler(
    pids: Mapping[str, int], output: Path | None, workdir: Path
) -> Iterator[Callable[[], None]]:
    """Record each process with py-spy (collapsed stacks) until the yielded ``stop`` is called.

    ``pids`` names the processes; each profile goes to ``output`` with the name inserted
    (``exporter-uvloop-1.txt`` → ``exporter-uvloop-1.fake-1.txt``). ``stop`` is called at the end of
    the poll cycle, so the profiles hold start-up (``load_config``, ``_serve``) and the cycle.
    """
    if output is None:
        yield lambda: None
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with ExitStack() as stack:
        children = []
        for name, pid in pids.items():
            target = output if name == "exporter" else output.with_suffix(f".{name}.txt")
            args = [spy, "record", "--format", "raw", "--rate", "200", "-o", str(target)]
            log = workdir / f"py-spy-{name}.log"
            children.append(stack.enter_context(process([*args, "-p", str(pid)], log)))
        time.sleep(1)  # py-spy needs a moment to attach (start-up takes longer)

        def stop() -> None:
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            for child in children:
                child.wait(30)

        yield stop
        stop()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime + stime


def total_cpu_seconds(pids: Sequence[int]) -> float:
    """CPU of several processes (the fake API's workers)."""
    return sum(cpu_seconds(pid) for pid in pids)


def machine_busy() -> float:
    """CPU seconds every core of the machine has spent busy since boot."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / _CLK_TCK


def memory(pid: int, field: str = "VmHWM") -> int:
    """A memory figure of ``/proc/PID/status`` in bytes: ``VmHWM`` (peak RSS) or ``VmRSS``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


# -- HTTP -------------------------------------------------------------------------------------


class Scraper:
    """Sequential GETs on one kept-alive connection, timed to the last byte."""

    def __init__(self, port: int, timeout: float = 120.0) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def get(self, path: str, *, gzipped: bool = False) -> tuple[int, bytes, float]:
        headers = {"Accept-Encoding": "gzip"} if gzipped else {}
        started = time.perf_counter()
        try:
            self._conn.request("GET", path, headers=headers)
            response = self._conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self._conn.close()
            raise
        elapsed = time.perf_counter() - started
        if gzipped and response.getheader("Content-Encoding") != "gzip":
            raise AssertionError(f"{path}: asked for gzip, got an uncompressed body")
        return response.status, body, elapsed

    def close(self) -> None:
        self._conn.close()


def wait_for(port: int, path: str, deadline: float, child: subprocess.Popen[bytes]) -> float:
    """Poll ``path`` until it answers 200; returns the monotonic time it did."""
    while True:
        if child.poll() is not None:
            raise RuntimeError(f"process exited with {child.returncode} before {path} was 200")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} not 200 in time")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return time.monotonic()
        except OSError:
            pass
        time.sleep(0.01)


def lag_reading(text: str) -> float | None:
    match = re.search(rf"^{LAG_METRIC} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


# -- correctness ------------------------------------------------------------------------------


def check_exposition(text: str, settings: Settings) -> tuple[list[str], int, dict[str, float]]:
    """Parse the exposition and check it is complete. Returns (problems, samples, cycle facts)."""
    n, w = settings.accounts, settings.windows
    problems: list[str] = []
    counts: dict[str, int] = {}
    up: dict[str, float] = {}
    requests: dict[str, float] = {}
    failed = timed = 0.0
    last: dict[str, float] = {}
    duration: dict[str, float] = {}
    total = 0
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as exc:  # the parser raises ValueError and friends
        return [f"exposition does not parse: {exc}"], 0, {}
    for family in families:
        for sample in family.samples:
            total += 1
            counts[sample.name] = counts.get(sample.name, 0) + 1
            account = sample.labels.get("account", "")
            if sample.name == metrics.UP.name:
                up[account] = sample.value
            elif sample.name == metrics.REQUESTS.name:
                requests[account] = sample.value
            elif sample.name == metrics.ERRORS.name:
                failed += sample.value
            elif sample.name == metrics.LAST_SUCCESS.name:
                last[account] = sample.value
            elif sample.name == metrics.POLL_DURATION.name:
                duration[account] = sample.value
            elif sample.name == f"{REQUEST_DURATION}_count":
                timed += sample.value
    expected = {f.name: n * w * SOURCES_PER_ACCOUNT for f, _ in metrics.TRAFFIC_FIELDS}
    per_account = (
        metrics.UP, metrics.ACTIVE, metrics.REQUESTS, metrics.LAST_SUCCESS,
        metrics.POLL_DURATION, metrics.POLL_INTERVAL, metrics.ACCOUNT_INFO,
        metrics.DROPPED_SOURCES,
    )  # fmt: skip
    expected.update({f.name: n for f in per_account})
    expected[metrics.ERRORS.name] = n * len(ApiErrorReason)
    expected[metrics.WINDOW_LAST_SUCCESS.name] = n * w
    single = metrics.EXPORTER_NAMES - {LAG_METRIC, REQUEST_DURATION, ACCOUNT_FILE_OK}
    expected.update({name: 1 for name in single})
    expected[f"{REQUEST_DURATION}_count"] = len(OUTCOMES)  # one histogram per outcome
    expected[f"{HTTP_REJECTED}_total"] = len(HTTP_REJECT_REASONS)  # every reason from the start
    expected[ACCOUNT_FILE_OK] = 0  # the benchmark's accounts are all in the main file
    for name, count in expected.items():
        if counts.get(name, 0) != count:
            problems.append(f"{name}: {counts.get(name, 0)} samples, expected {count}")
    if (polled := sum(1 for v in up.values() if v == 1)) != n:
        problems.append(f"{polled} of {n} accounts have retargeting_up 1")
    # Every request is timed as it ends, and counted per account when its poll ends.
    if timed < sum(requests.values()):
        problems.append(f"{timed:.0f} requests timed, {sum(requests.values()):.0f} counted")
    if short := [a for a, v in requests.items() if v < w]:
        problems.append(f"{len(short)} accounts made fewer than {w} requests")
    facts: dict[str, float] = {"polled": float(len([a for a, v in up.items() if v == 1]))}
    # Failed attempts (each retried while the poll's budget lasts). Not requests beyond N·W:
    # with a short interval the later polls of the first accounts begin before the cycle ends.
    facts["failed"] = failed
    if last and len(duration) == len(last):
        facts["cycle"] = max(last.values()) - min(last[a] - duration[a] for a in last)
    return problems, total, facts


# -- one run ----------------------------------------------------------------------------------


def write_config(path: Path, settings: Settings, api_url: str) -> dict[str, str]:
    """The exporter config for N generated accounts; returns the environment with their keys."""
    windows = ", ".join(WINDOW_CHOICES[: settings.windows])
    lines = [
        "api:",
        f"  url: {api_url}",
        f"  max_concurrency: {settings.concurrency}",
        "  timeout: 30s",
        "polling:",
        f"  interval: {settings.interval}",
        f"windows: [{windows}]",
        "accounts:",
    ]
    env = dict(os.environ, **{eventloop.ENV: settings.event_loop})
    for i, key in enumerate(settings.keys):
        lines.append(f"  - {{name: shop-{i:05d}, rest_key_env: BENCH_KEY_{i:05d}}}")
        env[f"BENCH_KEY_{i:05d}"] = key
    path.write_text("\n".join(lines) + "\n")
    return env


def run(settings: Settings) -> Result:
    """Benchmark once. Never raises for a slow or wrong exporter: see ``Result.problems``."""
    if settings.windows > len(WINDOW_CHOICES):
        raise ValueError(f"at most {len(WINDOW_CHOICES)} windows")
    result = Result(settings, requests=settings.accounts * settings.windows)
    workdir = settings.workdir or Path(tempfile.mkdtemp(prefix="retargeting-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        _run(settings, result, workdir)
    except (OSError, RuntimeError, TimeoutError, AssertionError, http.client.HTTPException) as exc:
        result.problems.append(f"{type(exc).__name__}: {exc} (logs in {workdir})")
        return result
    if settings.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def _run(settings: Settings, result: Result, workdir: Path) -> None:
    python = sys.executable
    fake_port, exporter_port = free_ports(2)
    records = [workdir / f"fake-{n}.records" for n in range(1, settings.fake_workers + 1)]
    # The fake runs on the default loop whatever the exporter's A/B setting.
    fake_env = {k: v for k, v in os.environ.items() if k != eventloop.ENV}
    with ExitStack() as fakes:
        workers = []
        for number, record in enumerate(records, 1):
            fake_args = [
                python, "-m", "exporter.fakeapi", "--accounts", str(settings.accounts),
                "--latency", str(settings.latency), "--port", str(fake_port),
                "--record", str(record),
                *(["--reuse-port"] if settings.fake_workers > 1 else []),
            ]  # fmt: skip
            log = workdir / f"fake-{number}.log"
            workers.append(fakes.enter_context(process(fake_args, log, fake_env)))
        for worker in workers:
            wait_for_port(fake_port, worker)
        time.sleep(0.5)  # every worker listening, not only the first (they load the same data)
        api_url = f"http://127.0.0.1:{fake_port}/v1/partners-api/traffic-source"
        config = workdir / "config.yaml"
        env = write_config(config, settings, api_url)
        exporter_args = [
            python, "-m", "exporter", "--config.file", str(config),
            "--web.listen-address", f"127.0.0.1:{exporter_port}",
            "--debug.loop-lag", f"{round(settings.lag_window * 1000)}ms",
        ]  # fmt: skip
        fake_pids = [w.pid for w in workers]
        exporter_log = workdir / "exporter.log"
        with process(exporter_args, exporter_log, env) as exporter:
            pids = {"exporter": exporter.pid} | {
                f"fake-{number}": pid for number, pid in enumerate(fake_pids, 1)
            }
            with profiler(pids, settings.profile, workdir) as cycle_over:
                text, started, phase = _measure_exporter(
                    settings, result, exporter, fake_pids, exporter_port, cycle_over
                )
        if settings.workdir is not None:
            (workdir / "metrics.prom").write_text(text)
    result.event_loop = _logged_event_loop(exporter_log)
    if result.event_loop != settings.event_loop:
        result.problems.append(f"the exporter ran on {result.event_loop or 'an unknown loop'}")
    if result.steady is not None and phase is not None:
        _read_steady_traffic(settings, result.steady, records, phase - started)


def _logged_event_loop(log: Path) -> str:
    match = re.search(r'event_loop"?[=:] ?"?(\w+)', log.read_text(errors="replace"))
    return match.group(1) if match else ""


def wait_for_port(port: int, child: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if child.poll() is not None:
            raise RuntimeError(f"process exited with {child.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on port {port}") from None
            time.sleep(0.02)


def _measure_exporter(
    settings: Settings,
    result: Result,
    exporter: subprocess.Popen[bytes],
    fake_pids: Sequence[int],
    port: int,
    on_ready: Callable[[], None],
) -> tuple[str, float, float | None]:
    """The start-up cycle, the scrapes and the steady phase; returns the exposition after the
    cycle, when the exporter was first healthy and when the steady phase began, if it did
    (``time.monotonic()``)."""
    # Start-up (reading a config of N accounts) is not part of the cycle: the cycle starts
    # when the poller does, just before the first request is answered.
    started = wait_for(port, "/-/healthy", time.monotonic() + 600, exporter)
    cpu_start, fake_start, busy_start = (
        cpu_seconds(exporter.pid), total_cpu_seconds(fake_pids), machine_busy()
    )  # fmt: skip
    scraper = Scraper(port)
    lags: list[float] = []
    during: list[float] = []
    deadline = started + 20 * settings.bound + 120
    # The scrapes during the cycle come from their own thread and connection, so that a slow
    # one does not hold up the readiness probe (the cycle's end, seen from outside).
    cycle_over = threading.Event()

    def scrape_during_cycle() -> None:
        own = Scraper(port)
        next_scrape = started + settings.poll_scrape_every
        try:
            while not cycle_over.wait(max(0.0, next_scrape - time.monotonic())):
                _, body, elapsed = own.get("/metrics", gzipped=True)
                during.append(elapsed)
                if (lag := lag_reading(gzip.decompress(body).decode())) is not None:
                    lags.append(lag)
                next_scrape += settings.poll_scrape_every
        finally:
            own.close()

    scraping = threading.Thread(target=scrape_during_cycle, name="scrapes during the cycle")
    scraping.start()
    try:
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError("the exporter did not become ready in time")
            status, _, _ = scraper.get("/-/ready")
            if status == 200:
                break
            time.sleep(0.1)  # /-/ready looks at every account: not too often
        ready = time.monotonic()
    finally:
        cycle_over.set()
        scraping.join()
    result.cycle_cpu = cpu_seconds(exporter.pid) - cpu_start
    result.fake_cpu = total_cpu_seconds(fake_pids) - fake_start
    result.other_cpu = machine_busy() - busy_start - result.cycle_cpu - result.fake_cpu
    on_ready()  # after the cycle's CPU figures: stopping the profilers takes a while
    result.cycle_outside = ready - started
    result.scrape_during_poll = Timings.of(during, 0)

    # One scrape for the record: the exposition checked and the cycle read from it.
    _, body, _ = scraper.get("/metrics")
    text = body.decode()
    if (lag := lag_reading(text)) is not None:
        lags.append(lag)
    result.lag_polling = max(lags, default=math.nan)
    problems, result.samples, facts = check_exposition(text, settings)
    result.problems.extend(problems)
    result.cycle = facts.get("cycle", math.nan)
    result.accounts_polled = int(facts.get("polled", 0))
    result.failed_attempts = int(facts.get("failed", 0))

    if settings.scrapes > 0:
        _measure_unchanged_scrapes(settings, result, scraper, text)
    phase = None
    if settings.steady_intervals > 0:
        result.steady = Steady()
        phase = _steady_start(settings, started, time.monotonic())
        _measure_steady(settings, result.steady, scraper, exporter.pid, fake_pids, phase)
    scraper.close()
    result.peak_rss = memory(exporter.pid)
    return text, started, phase


def _measure_unchanged_scrapes(
    settings: Settings, result: Result, scraper: Scraper, text: str
) -> None:
    """Timed scrapes once the lag window has forgotten the cycle (no account changes then
    unless the interval is short)."""
    time.sleep(settings.lag_window)
    lags: list[float] = []
    for gzipped in (False, True):
        seconds, size, last = _timed_scrapes(scraper, settings.scrapes, gzipped, lags)
        timings = Timings.of(seconds, size)
        if gzipped:
            result.scrape_gzip = timings
        else:
            result.scrape_raw = timings
        if _account_sample_count(last) != _account_sample_count(text):
            kind = "gzip" if gzipped else "plain"
            result.problems.append(f"a {kind} scrape has a different number of account samples")
    result.lag_scraping = max(lags, default=math.nan)
    if not lags:
        result.problems.append(f"no {LAG_METRIC} in the exposition")


def _timed_scrapes(
    scraper: Scraper, count: int, gzipped: bool, lags: list[float]
) -> tuple[list[float], int, str]:
    """Time ``count`` scrapes; returns the times, the last body's size and its text."""
    seconds: list[float] = []
    size = 0
    text = ""
    for _ in range(count):
        _, body, elapsed = scraper.get("/metrics", gzipped=gzipped)
        seconds.append(elapsed)
        size = len(body)
        text = (gzip.decompress(body) if gzipped else body).decode()
        if (lag := lag_reading(text)) is not None:
            lags.append(lag)
    return seconds, size, text


def _steady_start(settings: Settings, started: float, now: float) -> float:
    """The first ``started + interval/2 + k·interval`` not before ``now``: the accounts' later
    polls come at their own phase of the interval from ``interval/2`` after start-up on, so
    each whole interval from there holds one poll of every account."""
    interval = settings.interval_seconds
    first = started + interval / 2
    return first + max(0, math.ceil((now - first) / interval)) * interval


def _measure_steady(
    settings: Settings,
    steady: Steady,
    scraper: Scraper,
    pid: int,
    fake_pids: Sequence[int],
    start: float,
) -> None:
    """From ``start``, ``steady_intervals`` whole intervals: a gzip scrape every
    ``steady_every`` s, the CPU of the exporter and of the fake, RSS samples."""
    time.sleep(max(0.0, start - time.monotonic()))
    cpu_start, fake_start, begun = cpu_seconds(pid), total_cpu_seconds(fake_pids), time.monotonic()
    end = start + settings.steady_intervals * settings.interval_seconds
    seconds: list[float] = []
    lags: list[float] = []
    rss: list[int] = []
    next_scrape = begun + settings.steady_every
    while next_scrape < end:
        time.sleep(max(0.0, next_scrape - time.monotonic()))
        more, _, _ = _timed_scrapes(scraper, 1, True, lags)
        seconds.extend(more)
        rss.append(memory(pid, "VmRSS"))
        next_scrape += settings.steady_every
    time.sleep(max(0.0, end - time.monotonic()))
    elapsed = time.monotonic() - begun
    steady.cpu = (cpu_seconds(pid) - cpu_start) / elapsed
    steady.fake_cpu = (total_cpu_seconds(fake_pids) - fake_start) / elapsed
    steady.rss = int(statistics.median(rss)) if rss else memory(pid, "VmRSS")
    steady.scrape_gzip = Timings.of(seconds, 0)
    # The loop's lag readings cover the last window only: the first reading of the phase may
    # still include the end of the cycle, so it is left out.
    steady.lag = max(lags[1:] if len(lags) > 1 else lags, default=math.nan)
    # The fake's records place the phase from the first request, a little after the harness
    # saw /-/healthy: the requests at its very end must be answered before the exporter stops.
    time.sleep(1 + 2 * settings.latency)


def _read_steady_traffic(
    settings: Settings, steady: Steady, records: Sequence[Path], offset: float
) -> None:
    """The fake's records (written when it stopped) of the steady phase, which began
    ``offset`` seconds after start-up.

    Start-up is taken from the records themselves (the first request came as the poller
    started; the harness saw ``/-/healthy`` a little later): the phase's intervals then line
    up with the accounts' slots, and a poll on time is never counted in the wrong interval.
    """
    requests = read_records(records)
    if not requests:
        raise RuntimeError("the fake recorded no request")
    traffic = steady_traffic(
        requests,
        settings.keys,
        requests[0].time + offset,
        settings.interval_seconds,
        settings.steady_intervals,
    )
    steady.traffic = traffic
    if traffic.requests:
        steady.cpu_per_request = steady.cpu * traffic.seconds / traffic.requests


def _account_sample_count(text: str) -> int:
    return sum(1 for line in text.splitlines() if 'account="' in line and line[0] != "#")
