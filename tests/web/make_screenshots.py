"""Take the dashboard's screenshots in docs/screenshots/ on the demo project.

Usage: .venv/bin/python -m tests.web.make_screenshots [--project DIR] [--out docs/screenshots]
(DIR: reuse a project made before; without it the demo project is made in a temp folder,
through the real agent, as `onlooker demo` makes it, plus the runs a person would add.)
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from onlooker.cli.web.server import Dashboard

from .browser import chrome, missing
from .project import demo_project


def wait(driver, css: str, timeout: float = 20.0) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def shoot(driver, url: str, ready: str, out: Path, height: int | None = None) -> None:
    driver.get(url)
    wait(driver, ready)
    time.sleep(0.8)  # the other cards and the last chart's paint; a screenshot, not a test
    full = driver.execute_script("return document.documentElement.scrollHeight")
    # the viewport itself at the page's height (a window's size includes its frame)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 1440, "height": min(height or full, 2400), "deviceScaleFactor": 1,
        "mobile": False})
    time.sleep(0.3)
    driver.save_screenshot(str(out))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    opts = parser.parse_args()
    why = missing()
    if why:
        raise SystemExit(why)
    tmp = None
    project = opts.project
    if project is None or not (project / ".onlooker").exists():
        if project is None:
            tmp = Path(tempfile.mkdtemp(prefix="onlooker-shots-"))
            project = tmp / "demo-project"
        demo_project(project)
    opts.out.mkdir(parents=True, exist_ok=True)
    from onlooker.store.catalog import Catalog

    with Catalog.find(project) as cat:
        runs = cat.runs(limit=None)
    fits = [r["id"] for r in runs if any(str(a).endswith("fit.py") for a in r["command"])]
    featurize = [r["id"] for r in runs if any(str(a).endswith("featurize.py")
                                              for a in r["command"])]
    driver = chrome()
    try:
        with Dashboard(project, port=0) as dash:
            base = dash.url.rstrip("/")
            shoot(driver, f"{base}/?columns=params.lr,metrics.accuracy", "#runs-table",
                  opts.out / "runs.png")
            shoot(driver, f"{base}/runs/{fits[0]}", "#metric-charts .chart[data-rendered]",
                  opts.out / "run.png")
            shoot(driver, f"{base}/compare?runs={featurize[-1]},{featurize[0]}", "#causes,"
                  " #run-diff .faint", opts.out / "compare.png")
            shoot(driver, f"{base}/compare?runs={','.join(map(str, fits))}",
                  "#overlay[data-rendered], #parallel svg", opts.out / "compare-fits.png")
            shoot(driver, f"{base}/pipeline", "#graph[data-rendered]",
                  opts.out / "pipeline.png")
            shoot(driver, f"{base}/lineage?path=model.pkl", "#graph[data-rendered]",
                  opts.out / "lineage.png")
    finally:
        driver.quit()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
