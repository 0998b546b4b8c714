"""The benchmark: the real exporter daemon against the fake API, measured against the limits.

For each size N it starts, each in its own process (two cores: the fake's CPU must not be
charged to the exporter, nor share its event loop):

1. the fake vendor API (``python -m exporter.fakeapi --accounts N --latency L``);
2. the exporter (``python -m exporter``) with a generated config of N accounts x W windows, keys
   passed in environment variables, ``max_concurrency: C`` and ``--debug.loop-lag``;
3. after the exporter has been measured and stopped, the naive baseline (``bench/naive.py``):
   the same config polled once, served with ``prometheus_client.generate_latest``.

What it measures, and how:

- poll cycle: the start-up cycle, in which every account is polled at once. Measured inside
  the exporter from its own metrics: from the earliest poll start
  (``retargeting_last_success_timestamp_seconds - retargeting_poll_duration_seconds``) to the
  latest poll end, compared with the bound N·W·L/C. "Every account polled" means every account
  reports ``retargeting_up 1`` and made W requests. The cycle as seen from outside (first answer
  of ``/-/healthy`` to the first 200 of ``/-/ready``) is printed alongside.
- CPU seconds of the exporter process over that cycle (``/proc/PID/stat``), peak RSS (``VmHWM``).
- ``/metrics``: sequential scrapes on one kept-alive connection, time to the last byte, with
  and without ``Accept-Encoding: gzip``; body sizes. The same for the baseline.
- event-loop lag: the exporter's ``retargeting_exporter_event_loop_lag_seconds`` (longest timer
  delay in a sliding window of ``--lag-window`` seconds), read from every scrape: during the
  poll cycle the harness scrapes (gzip, like Prometheus) every ``--poll-scrape-every`` seconds;
  before the timed scrapes it waits one window, so their readings do not include the cycle.
- the machine: CPU seconds of the fake API and of every other process during the cycle
  (``/proc/stat``), since on two cores they compete with the exporter.
- optionally (``--steady S``) steady state: once the accounts' later polls have begun
  (``--interval``/2 after start-up, spread over the interval) the harness scrapes with gzip
  every ``--steady-every`` seconds for S seconds: each scrape then sees changed accounts.

Correctness is checked on every run (the exposition is parsed with ``prometheus_client``'s
parser; every family has the expected number of samples); problems are listed, and the exit code
is 1 if there are any. Timings are reported, never judged.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
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

from exporter import metrics
from exporter.client import ApiErrorReason
from exporter.config import parse_duration

REPO = Path(__file__).resolve().parent.parent
WINDOW_CHOICES = ("24h", "30d", "7d", "1h")
SOURCES_PER_ACCOUNT = 4  # the fake's generated accounts report the four documented sources
LAG_METRIC = "retargeting_exporter_event_loop_lag_seconds"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Settings:
    accounts: int
    windows: int = 2
    latency: float = 0.05
    fake_workers: int = (
        2  # processes of the fake API (one alone limits the cycle, not the exporter)
    )
    concurrency: int = 200
    interval: str = "5m"
    scrapes: int = 20
    naive_scrapes: int = 5
    poll_scrape_every: float = 5.0
    lag_window: float = 10.0
    steady: float = 0.0  # seconds of steady-state scraping (0: none)
    steady_every: float = 15.0
    workdir: Path | None = None  # keep configs and logs here (default: a temporary directory)
    profile: Path | None = None  # write a py-spy profile of the exporter here

    @property
    def bound(self) -> float:
        """The least time a full poll cycle can take: N·W·L/C."""
        return self.accounts * self.windows * self.latency / self.concurrency


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
class Result:
    settings: Settings
    requests: int = 0
    cycle: float = math.nan  # inside the exporter: first poll start to last poll end
    cycle_outside: float = math.nan  # first /-/healthy answer to first /-/ready 200
    cycle_cpu: float = math.nan  # exporter CPU seconds over the cycle
    accounts_polled: int = 0
    retries: int = 0
    scrape_raw: Timings = field(default_factory=Timings)
    scrape_gzip: Timings = field(default_factory=Timings)
    scrape_during_poll: Timings = field(default_factory=Timings)
    steady_gzip: Timings = field(default_factory=Timings)
    naive_raw: Timings = field(default_factory=Timings)
    naive_gzip: Timings = field(default_factory=Timings)
    lag_polling: float = math.nan
    lag_scraping: float = math.nan
    lag_steady: float = math.nan
    steady_cpu: float = math.nan  # exporter CPU seconds per second in steady state
    steady_polls: float = math.nan  # account polls per second in steady state
    fake_cpu: float = math.nan  # the fake API's CPU seconds over the cycle
    other_cpu: float = math.nan  # every other process's CPU seconds over the cycle
    peak_rss: int = 0  # bytes
    rss_after_cycle: int = 0  # bytes, VmHWM when the cycle ended (before the timed scrapes)
    samples: int = 0
    problems: list[str] = field(default_factory=list)
    cycles: list[float] = field(default_factory=list)  # every run's cycle (with --repeat)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        out["settings"]["workdir"] = None
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
    (``exporter-10000.txt`` → ``exporter-10000.fake-1.txt``). ``stop`` is called at the end of
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


def process_tree(pid: int) -> list[int]:
    """A process and its live children (the fake API's workers)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [pid, *children]


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its live children (the fake API's workers)."""
    return sum(cpu_seconds(p) for p in process_tree(pid))


def machine_busy() -> float:
    """CPU seconds every core of the machine has spent busy since boot."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / _CLK_TCK


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
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
            elif sample.name == metrics.LAST_SUCCESS.name:
                last[account] = sample.value
            elif sample.name == metrics.POLL_DURATION.name:
                duration[account] = sample.value
    expected = {f.name: n * w * SOURCES_PER_ACCOUNT for f, _ in metrics.TRAFFIC_FIELDS}
    per_account = (
        metrics.UP, metrics.ACTIVE, metrics.REQUESTS, metrics.LAST_SUCCESS,
        metrics.POLL_DURATION, metrics.POLL_INTERVAL, metrics.ACCOUNT_INFO,
        metrics.DROPPED_SOURCES,
    )  # fmt: skip
    expected.update({f.name: n for f in per_account})
    expected[metrics.ERRORS.name] = n * len(ApiErrorReason)
    expected.update({f.name: 1 for f in metrics.EXPORTER_FAMILIES})
    for name, count in expected.items():
        if counts.get(name, 0) != count:
            problems.append(f"{name}: {counts.get(name, 0)} samples, expected {count}")
    if (polled := sum(1 for v in up.values() if v == 1)) != n:
        problems.append(f"{polled} of {n} accounts have retargeting_up 1")
    if short := [a for a, v in requests.items() if v < w]:
        problems.append(f"{len(short)} accounts made fewer than {w} requests")
    facts: dict[str, float] = {"polled": float(len([a for a, v in up.items() if v == 1]))}
    facts["retries"] = sum(requests.values()) - n * w
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
    env = dict(os.environ)
    for i in range(settings.accounts):
        lines.append(f"  - {{name: shop-{i:05d}, rest_key_env: BENCH_KEY_{i:05d}}}")
        env[f"BENCH_KEY_{i:05d}"] = f"key-{i:05d}"  # the fake's generated keys
    path.write_text("\n".join(lines) + "\n")
    return env


def run(settings: Settings) -> Result:
    """Benchmark one size. Never raises for a slow or wrong exporter: see ``Result.problems``."""
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
    fake_port, exporter_port, naive_port = free_ports(3)
    fake_args = [
        python, "-m", "exporter.fakeapi", "--accounts", str(settings.accounts),
        "--latency", str(settings.latency), "--port", str(fake_port),
        "--workers", str(settings.fake_workers),
    ]  # fmt: skip
    with process(fake_args, workdir / "fakeapi.log") as fake:
        wait_for_port(fake_port, fake)
        api_url = f"http://127.0.0.1:{fake_port}/v1/partners-api/traffic-source"
        config = workdir / "config.yaml"
        env = write_config(config, settings, api_url)
        exporter_args = [
            python, "-m", "exporter", "--config.file", str(config),
            "--web.listen-address", f"127.0.0.1:{exporter_port}",
            "--debug.loop-lag", f"{round(settings.lag_window * 1000)}ms",
        ]  # fmt: skip
        with process(exporter_args, workdir / "exporter.log", env) as exporter:
            pids = {"exporter": exporter.pid} | {
                f"fake-{number}": pid for number, pid in enumerate(process_tree(fake.pid), 1)
            }
            with profiler(pids, settings.profile, workdir) as cycle_over:
                text = _measure_exporter(
                    settings, result, exporter, fake.pid, exporter_port, cycle_over
                )
        if settings.workdir is not None:
            (workdir / "metrics.prom").write_text(text)
        if settings.naive_scrapes == 0:
            return
        naive_args = [
            python, "-m", "bench.naive", "--config.file", str(config), "--port", str(naive_port),
        ]  # fmt: skip
        with process(naive_args, workdir / "naive.log", env) as naive:
            _measure_naive(settings, result, naive, naive_port, text)


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
    fake_pid: int,
    port: int,
    on_ready: Callable[[], None],
) -> str:
    # Start-up (reading a config of N accounts) is not part of the cycle: the cycle starts
    # when the poller does, just before the first request is answered.
    started = wait_for(port, "/-/healthy", time.monotonic() + 600, exporter)
    cpu_start, fake_start, busy_start = (
        cpu_seconds(exporter.pid), tree_cpu_seconds(fake_pid), machine_busy()
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
    result.fake_cpu = tree_cpu_seconds(fake_pid) - fake_start
    result.other_cpu = machine_busy() - busy_start - result.cycle_cpu - result.fake_cpu
    on_ready()  # after the cycle's CPU figures: stopping the profilers takes a while
    result.rss_after_cycle = peak_rss(exporter.pid)
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
    result.retries = int(facts.get("retries", 0))

    time.sleep(settings.lag_window)  # the lag window forgets the cycle
    lags = []
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
    if settings.steady > 0:
        _measure_steady(settings, result, scraper, exporter.pid, ready)
    scraper.close()
    result.peak_rss = peak_rss(exporter.pid)
    return text


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


def _requests_total(text: str) -> float:
    prefix = metrics.REQUESTS.name + "{"
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


def _measure_steady(
    settings: Settings, result: Result, scraper: Scraper, pid: int, ready: float
) -> None:
    """Scrape every ``steady_every`` s for ``steady`` s once the later polls have begun."""
    resume = ready + parse_duration(settings.interval) / 2 + 2  # the first of the later polls
    time.sleep(max(0.0, resume - time.monotonic()))
    _, body, _ = scraper.get("/metrics")
    requests_start, cpu_start, start = (
        _requests_total(body.decode()),
        cpu_seconds(pid),
        time.monotonic(),
    )
    time.sleep(settings.lag_window)  # lag readings from now on cover steady state only
    seconds: list[float] = []
    lags: list[float] = []
    end = time.monotonic() + settings.steady
    while time.monotonic() < end:
        more, _, _ = _timed_scrapes(scraper, 1, True, lags)
        seconds.extend(more)
        time.sleep(settings.steady_every)
    _, body, _ = scraper.get("/metrics")
    elapsed = time.monotonic() - start
    result.steady_gzip = Timings.of(seconds, 0)
    result.lag_steady = max(lags, default=math.nan)
    result.steady_cpu = (cpu_seconds(pid) - cpu_start) / elapsed
    result.steady_polls = (
        (_requests_total(body.decode()) - requests_start) / settings.windows / elapsed
    )


def _measure_naive(
    settings: Settings, result: Result, naive: subprocess.Popen[bytes], port: int, text: str
) -> None:
    wait_for(port, "/-/ready", time.monotonic() + 20 * settings.bound + 300, naive)
    scraper = Scraper(port, timeout=600)
    for gzipped in (False, True):
        seconds = []
        size = 0
        for _ in range(settings.naive_scrapes):
            _, body, elapsed = scraper.get("/metrics", gzipped=gzipped)
            seconds.append(elapsed)
            size = len(body)
        if gzipped:
            result.naive_gzip = Timings.of(seconds, size)
        else:
            result.naive_raw = Timings.of(seconds, size)
            # Same data: the baseline's account samples are the exporter's (values may differ).
            naive_samples = _account_sample_count(body.decode())
            if naive_samples != _account_sample_count(text):
                result.problems.append(
                    f"baseline has {naive_samples} account samples, the exporter "
                    f"{_account_sample_count(text)}"
                )
    scraper.close()


def _account_sample_count(text: str) -> int:
    return sum(1 for line in text.splitlines() if 'account="' in line and line[0] != "#")


# -- report -----------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def _s(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds:.2f} s"


def _size(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def _ratio(slow: float, fast: float) -> str:
    return "n/a" if math.isnan(slow) or math.isnan(fast) or fast == 0 else f"{slow / fast:.0f}x"


def table(results: Sequence[Result]) -> str:
    """A Markdown table, one column per size."""
    rows: list[tuple[str, list[str]]] = [
        ("accounts x windows", [
            f"{r.settings.accounts:,} x {r.settings.windows}" for r in results
        ]),
        ("API requests per cycle (N·W)", [f"{r.requests:,}" for r in results]),
        ("bound N·W·L/C", [_s(r.settings.bound) for r in results]),
        ("poll cycle (in the exporter)", [_s(r.cycle) for r in results]),
        ("poll cycle, min - max over the runs", [
            " - ".join(_s(c) for c in (min(r.cycles), max(r.cycles))) if r.cycles else "n/a"
            for r in results
        ]),
        ("poll cycle ÷ bound", [
            "n/a" if math.isnan(r.cycle) else f"{r.cycle / r.settings.bound:.2f}x"
            for r in results
        ]),
        ("poll cycle (healthy → ready, outside)", [_s(r.cycle_outside) for r in results]),
        ("accounts polled (retries)", [
            f"{r.accounts_polled:,} of {r.settings.accounts:,} ({r.retries})" for r in results
        ]),
        ("exporter CPU per poll cycle", [_s(r.cycle_cpu) for r in results]),
        ("fake API / other processes' CPU in the cycle", [
            f"{_s(r.fake_cpu)} / {_s(r.other_cpu)}" for r in results
        ]),
        ("samples in /metrics", [f"{r.samples:,}" for r in results]),
        ("/metrics body, raw / gzip", [
            f"{_size(r.scrape_raw.size)} / {_size(r.scrape_gzip.size)}" for r in results
        ]),
        ("/metrics median / p99, raw", [
            f"{_ms(r.scrape_raw.median)} / {_ms(r.scrape_raw.p99)}" for r in results
        ]),
        ("/metrics median / p99, gzip", [
            f"{_ms(r.scrape_gzip.median)} / {_ms(r.scrape_gzip.p99)}" for r in results
        ]),
        ("/metrics gzip median during the poll cycle", [
            _ms(r.scrape_during_poll.median) for r in results
        ]),
        ("naive generate_latest median, raw / gzip", [
            f"{_ms(r.naive_raw.median)} / {_ms(r.naive_gzip.median)}" for r in results
        ]),
        ("speed-up over naive, raw / gzip", [
            f"{_ratio(r.naive_raw.median, r.scrape_raw.median)} / "
            f"{_ratio(r.naive_gzip.median, r.scrape_gzip.median)}"
            for r in results
        ]),
        ("max event-loop lag, polling / scraping", [
            f"{_ms(r.lag_polling)} / {_ms(r.lag_scraping)}" for r in results
        ]),
        ("peak RSS", [f"{r.peak_rss / 2**20:.0f} MiB" for r in results]),
    ]  # fmt: skip
    if any(r.settings.steady > 0 for r in results):
        rows += [
            ("steady state: account polls per second", [
                "n/a" if math.isnan(r.steady_polls) else f"{r.steady_polls:.0f}" for r in results
            ]),
            ("steady state: /metrics gzip median / p99", [
                f"{_ms(r.steady_gzip.median)} / {_ms(r.steady_gzip.p99)}" for r in results
            ]),
            ("steady state: max event-loop lag", [_ms(r.lag_steady) for r in results]),
            ("steady state: exporter CPU", [
                "n/a" if math.isnan(r.steady_cpu) else f"{r.steady_cpu:.1%}" for r in results
            ]),
        ]  # fmt: skip
    header = "| | " + " | ".join(f"{r.settings.accounts:,} accounts" for r in results) + " |"
    lines = [header, "| --- |" + " ---: |" * len(results)]
    lines.extend(f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the exporter against the fake API and the naive baseline.",
    )
    add = parser.add_argument
    add("--accounts", default="10000", help="comma-separated sizes, e.g. 100,1000,10000")
    add("--windows", type=int, default=2, help="windows per account (24h, 30d, 7d, 1h)")
    add("--latency", type=float, default=0.05, help="fake API latency in seconds")
    add("--fake-workers", type=int, default=2, help="processes serving the fake API")
    add("--concurrency", type=int, default=200, help="the exporter's api.max_concurrency")
    add("--interval", default="5m", help="polling interval (later polls come interval/2 on)")
    add("--scrapes", type=int, default=20, help="timed /metrics scrapes per encoding")
    add("--naive-scrapes", type=int, default=5, help="timed baseline scrapes per encoding")
    add("--poll-scrape-every", type=float, default=5.0, help="scrape period during the cycle (s)")
    add("--lag-window", type=float, default=10.0, help="--debug.loop-lag window (s)")
    add("--steady", type=float, default=0.0, help="seconds of steady-state scrapes (0: none)")
    add("--steady-every", type=float, default=15.0, help="steady-state scrape period (s)")
    add("--workdir", type=Path, help="keep configs and logs here")
    add(
        "--repeat",
        type=int,
        default=1,
        help="runs per size; the run with the median cycle is shown",
    )
    add("--json", type=Path, help="also write the results as JSON to this file")
    add(
        "--profile",
        type=Path,
        help="py-spy profiles up to the cycle's end: DIR/exporter-N.txt, DIR/exporter-N.fake-K.txt",
    )
    args = parser.parse_args(argv)
    results = []
    for size in (int(s) for s in args.accounts.split(",")):
        settings = Settings(
            accounts=size,
            windows=args.windows,
            latency=args.latency,
            fake_workers=args.fake_workers,
            concurrency=args.concurrency,
            interval=args.interval,
            scrapes=args.scrapes,
            naive_scrapes=args.naive_scrapes,
            poll_scrape_every=args.poll_scrape_every,
            lag_window=args.lag_window,
            steady=args.steady,
            steady_every=args.steady_every,
            workdir=args.workdir / str(size) if args.workdir else None,
            profile=args.profile / f"exporter-{size}.txt" if args.profile else None,
        )
        runs = []
        for number in range(args.repeat):
            print(
                f"benchmarking {size:,} accounts ({number + 1}/{args.repeat}) ...",
                file=sys.stderr,
                flush=True,
            )
            runs.append(run(settings))
        runs.sort(key=lambda r: (math.isnan(r.cycle), r.cycle))
        result = runs[(len(runs) - 1) // 2]
        result.cycles = [r.cycle for r in runs if not math.isnan(r.cycle)]
        result.problems = [p for r in runs for p in r.problems]
        results.append(result)
        for problem in result.problems:
            print(f"  problem: {problem}", file=sys.stderr)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps([r.to_json() for r in results], indent=2))
    return 0 if all(r.ok for r in results) else 1
