"""`onlooker ui` on big catalogs: time to first byte, a rendered runs page, and a
1,000,000-point metric series drawn, in a real browser (headless Chromium).

Builds (or reuses, with --keep) catalogs of 10,000 and 100,000 runs through the store's
write API (benchmarks/bench_query.py's `build`: 10 params, 5 metrics, 5 files, 3
telemetry samples a run) and one run with a 1,000,000-point `loss` series, serves each
with the dashboard (in this process, one uvicorn thread) and measures:

- TTFB: the runs page's HTML, and the first page of runs (/api/runs, 50 runs), by
  urllib: request sent -> first byte of the body;
- rendered runs page: a fresh page load in Chromium, navigation start -> the table of
  the first 50 runs in the DOM (the page's own performance mark);
- the 1,000,000-point series: the run page loaded in Chromium, navigation start ->
  the chart drawn (uPlot's draw hook), and apart the series request alone
  (/api/runs/1/metrics/loss: SQLite's min/max preselection, then LTTB to 2,000 points).

Medians of --repeat runs after one warm-up. Usage:
    .venv/bin/python benchmarks/bench_ui.py [--sizes 10000,100000] [--repeat 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_query import build  # noqa: E402

from onlooker.agent.metrics import Metric  # noqa: E402
from onlooker.cli.web.server import Dashboard  # noqa: E402
from onlooker.store.catalog import Catalog  # noqa: E402
from tests.web.browser import chrome, missing  # noqa: E402

POINTS = 1_000_000


def build_series(project: Path, n: int = POINTS) -> None:
    rng = random.Random(3)
    with Catalog.init(project) as cat, cat.transaction():
        run = cat.begin_run(command=["/usr/bin/python3", "train.py"], cwd=str(project),
                            exe="/usr/bin/python3", pid=1, pid_start=1, user="ana",
                            hostname="box", started_at=time.time() - 3600, tier="bench")
        cat.update_run(run, status="completed", exit_code=0, ended_at=time.time())
        cat.set_metrics(run, "train.log", (
            Metric("loss", float(i), math.exp(-i / 2e5) + rng.random() * 0.05
                   + (1.0 if i % 250_000 == 77 else 0.0)) for i in range(n)))


def ttfb(url: str, repeat: int) -> float:
    times = []
    for _ in range(repeat + 1):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as res:
            res.read(1)
            times.append(time.perf_counter() - started)
            res.read()
    return statistics.median(times[1:])


def mark(driver, url: str, name: str, done: str | None = None, timeout: float = 60.0) -> float:
    """Seconds from navigation start to the page's performance mark `name`; then waits
    until `done` (a CSS selector) is on the page too, so that no request of this load
    is still running on the server when the next one is timed."""
    driver.get("about:blank")
    driver.get(url)
    deadline = time.monotonic() + timeout
    found = None
    while time.monotonic() < deadline:
        if found is None:
            found = driver.execute_script(
                "const m = performance.getEntriesByName(arguments[0]); "
                "return m.length ? m[0].startTime : null", name)
        if found is not None and (done is None or driver.execute_script(
                "return !!document.querySelector(arguments[0])", done)):
            return found / 1000
        time.sleep(0.01)
    raise SystemExit(f"{url}: no mark {name} in {timeout} s")


def in_browser(driver, url: str, name: str, repeat: int,
               done: str | None = None) -> tuple[float, float]:
    times = [mark(driver, url, name, done) for _ in range(repeat + 1)][1:]
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the catalogs here")
    opts = parser.parse_args()
    why = missing()
    if why:
        raise SystemExit(f"needs a browser: {why}")
    root = opts.keep or Path(tempfile.mkdtemp(prefix="onlooker-bench-ui-"))
    driver = chrome()
    try:
        for n in (int(s) for s in opts.sizes.split(",")):
            project = root / f"runs-{n}"
            if not (project / ".onlooker" / "catalog.db").exists():
                project.mkdir(parents=True, exist_ok=True)
                started = time.perf_counter()
                build(project, n)
                print(f"{n:,} runs: built in {time.perf_counter() - started:.0f} s")
            with Dashboard(project, port=0) as dash:
                page = ttfb(dash.url, opts.repeat)
                first = ttfb(dash.url + "api/runs?limit=50", opts.repeat)
                shown, worst = in_browser(driver, dash.url, "onlooker:runs", opts.repeat)
            print(f"{n:>7,} runs: TTFB page {page * 1000:4.0f} ms, /api/runs (50) "
                  f"{first * 1000:4.0f} ms; runs page rendered {shown * 1000:4.0f} ms "
                  f"(worst {worst * 1000:.0f})")
        project = root / "series-1m"
        if not (project / ".onlooker" / "catalog.db").exists():
            project.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            build_series(project)
            print(f"{POINTS:,}-point series: built in {time.perf_counter() - started:.0f} s")
        with Dashboard(project, port=0) as dash:
            alone = ttfb(dash.url + "api/runs/1/metrics/loss", opts.repeat)
            drawn, worst = in_browser(driver, dash.url + "runs/1", "onlooker:chart:loss",
                                      opts.repeat, done="#command")
        print(f"{POINTS:,}-point series: series request (2,000 points) {alone * 1000:4.0f} ms;"
              f" run page -> chart drawn {drawn * 1000:4.0f} ms (worst {worst * 1000:.0f})")
    finally:
        driver.quit()
        if opts.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
