"""A run whose telemetry has GPU readings (the shape the sampler writes from NVML: the
run's own `gpu.<i>.util` / `gpu.<i>.mem`, the whole device's `dev.<i>.*`) gets a
utilization and a memory chart per device on its page, and one without gets none."""

from __future__ import annotations

import pytest

from onlooker.store.catalog import Catalog

from .browser import chrome, missing

pytestmark = pytest.mark.e2e
WHY = missing()
if WHY:
    pytest.skip(f"browser tests skipped: {WHY}", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from onlooker.cli.web.server import Dashboard  # noqa: E402

T0 = 1_795_000_000.0


def _run(cat: Catalog, gpus: int, at: float) -> int:
    run = cat.begin_run(command=["python", "train.py"], cwd=str(cat.project), exe=None,
                        pid=1, pid_start=1, user="ana", hostname="box", started_at=T0 + at,
                        tier="netlink+fanotify")
    rows = []
    for i in range(30):
        sample = {"cpu_pct": 90.0 + i % 7, "rss": 2e9 + i * 1e7, "read_bytes": i * 1e6,
                  "write_bytes": i * 1e5}
        for d in range(gpus):
            sample.update({f"gpu.{d}.procs": 1, f"gpu.{d}.util": 40.0 + d * 20 + i % 5,
                           f"gpu.{d}.mem": 8e9 + d * 1e9, f"dev.{d}.util": 60.0 + i % 3,
                           f"dev.{d}.mem": 9e9, f"dev.{d}.temp": 61, f"dev.{d}.power": 240})
        rows.append((run, T0 + at + i, sample))
    cat.add_telemetry(rows)
    cat.update_run(run, status="completed", exit_code=0, ended_at=T0 + at + 31)
    return run


def test_gpu_telemetry_is_charted_per_device(tmp_path):
    with Catalog.init(tmp_path) as cat:
        two, none = _run(cat, 2, 0), _run(cat, 0, 100)
    driver = chrome()
    try:
        with Dashboard(tmp_path, port=0) as dash:
            titles = {}
            for run in (two, none):
                driver.get(f"{dash.url.rstrip('/')}/runs/{run}")
                WebDriverWait(driver, 30).until(lambda d: d.find_elements(
                    By.CSS_SELECTOR, "[data-key^='telemetry:'] canvas"))
                titles[run] = driver.execute_script(
                    "return [...document.querySelectorAll(\"[data-key^='telemetry:'] h3\")]"
                    ".map(h => h.lastChild.textContent.trim())")
    finally:
        driver.quit()
    gpu = [t for t in titles[two] if t.startswith("GPU")]
    assert gpu == ["GPU 0 utilization", "GPU 0 memory", "GPU 1 utilization",
                   "GPU 1 memory"], titles[two]
    assert not [t for t in titles[none] if t.startswith("GPU")], titles[none]
    assert "CPU (100% = one core)" in titles[none]
