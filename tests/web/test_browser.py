"""The dashboard in a real browser (headless Chromium through Selenium) on a pipeline
the real agent captured: the runs page, a --where filter, a run's metric chart, a
comparison that shows the changed param, the pipeline and lineage graphs, a click on
a node, an unknown run, and a new run showing up while the page is open."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest

from tests.e2e.test_pipeline import cli, runs_json
from tests.e2e.test_robustness import settle

from .browser import chrome, missing
from .project import fit, pipeline_project

pytestmark = pytest.mark.e2e
WHY = missing()
if WHY:
    pytest.skip(f"browser tests skipped: {WHY}", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from onlooker.cli.web.server import Dashboard  # noqa: E402

TIMEOUT = 30


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("browser") / "proj"
    try:
        pipeline_project(project)  # the agent stays on: the dashboard runs beside it
        yield project
    finally:
        cli(project, "stop", check=False)


@pytest.fixture(scope="module")
def runs(project) -> dict[str, list[dict]]:
    """The captured runs by script stem, oldest first."""
    found: dict[str, list[dict]] = {}
    for r in sorted(runs_json(project), key=lambda r: r["id"]):
        found.setdefault(Path(r["command"][1]).stem, []).append(r)
    assert {k: len(v) for k, v in found.items()} == {
        "prepare": 2, "featurize": 2, "train": 2, "evaluate": 2, "fit": 2}
    return found


@pytest.fixture(scope="module")
def base(project):
    with Dashboard(project, port=0) as dash:
        yield dash.url.rstrip("/")


@pytest.fixture(scope="module")
def driver():
    drv = chrome()
    try:
        yield drv
    finally:
        drv.quit()


def until(driver, cond, timeout: float = TIMEOUT):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: cond(d))


def css(driver, selector: str) -> list:
    return driver.find_elements(By.CSS_SELECTOR, selector)


def table_ids(driver) -> list[int]:
    # read in one script: the live refresh may redraw the table between two calls
    return driver.execute_script(
        "return [...document.querySelectorAll('#runs-table tbody tr')]"
        ".map((r) => Number(r.dataset.id))")


def test_runs_page_lists_the_captured_runs(driver, base, runs):
    driver.get(base + "/")
    until(driver, lambda d: css(d, "#runs-table tbody tr"))
    want = sorted((r["id"] for rs in runs.values() for r in rs), reverse=True)
    assert table_ids(driver) == want
    assert f"of {len(want)} runs" in driver.find_element(By.ID, "count").text
    newest = css(driver, "#runs-table tbody tr")[0]
    assert "src/fit.py data/features --lr 0.05" in newest.text
    assert driver.get_log("browser") == []  # no script error on the way


def test_where_filter_and_an_inline_error(driver, base, runs):
    driver.get(base + "/")
    box = until(driver, lambda d: css(d, "input.where"))[0]
    box.send_keys("command ~ '*featurize*'", Keys.ENTER)
    want = sorted((r["id"] for r in runs["featurize"]), reverse=True)
    until(driver, lambda d: table_ids(d) == want)
    assert "where=" in driver.current_url
    box.clear()
    box.send_keys("params.lr >", Keys.ENTER)
    error = until(driver, lambda d: css(d, ".error-line"))[0]
    assert "a value after '>' was expected" in error.text
    assert "invalid" in box.get_attribute("class")


def test_a_run_page_draws_its_metric_chart(driver, base, runs):
    run = runs["fit"][-1]
    driver.get(f"{base}/runs/{run['id']}")
    charts = until(driver, lambda d: len(css(d, "#metric-charts .chart[data-rendered]")) == 2
                   and css(d, "#metric-charts .chart[data-rendered]"))
    keys = sorted(c.get_attribute("data-key") for c in charts)
    assert keys == ["metrics/history.csv:accuracy", "metrics/history.csv:loss"]
    canvas = charts[0].find_element(By.TAG_NAME, "canvas")
    assert canvas.size["width"] > 200 and canvas.size["height"] > 100
    assert "30 points" in charts[0].text
    params = driver.find_element(By.ID, "params").text
    assert "lr" in params and "0.05" in params
    assert "data/features/train.pkl" in driver.find_element(By.ID, "inputs").text
    assert "metrics/history.csv" in driver.find_element(By.ID, "outputs").text


def test_compare_two_runs_shows_the_changed_param(driver, base, runs):
    a, b = (r["id"] for r in runs["featurize"])
    driver.get(base + "/?where=" + urllib.parse.quote("command ~ '*featurize*'"))
    until(driver, lambda d: len(table_ids(d)) == 2)
    driver.execute_script("sessionStorage.clear()")
    driver.get(driver.current_url)
    until(driver, lambda d: len(table_ids(d)) == 2)
    for box in css(driver, "#runs-table tbody input[type=checkbox]"):
        box.click()
    button = driver.find_element(By.ID, "compare")
    until(driver, lambda d: button.is_enabled())
    button.click()
    until(driver, lambda d: "/compare" in d.current_url)
    row = until(driver, lambda d: css(
        d, "#diff-table tr[data-key='params.yaml:featurize.max_features']"))[0]
    assert driver.current_url.endswith(f"/compare?runs={a},{b}")  # oldest first
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells == ["params.yaml:featurize.max_features", "8", "3"]
    key = "params.yaml:featurize.max_features"
    diff = until(driver, lambda d: css(d, f"#run-diff [data-key='{key}']"))
    assert diff[0].text.endswith("8 → 3")
    causes = until(driver, lambda d: css(d, "#causes li"))
    assert any("featurize.max_features went 8 -> 3" in c.text for c in causes)


def test_pipeline_graph_and_a_click_on_a_stage(driver, base, runs):
    driver.get(base + "/pipeline")
    until(driver, lambda d: css(d, "#graph[data-rendered]"))
    stages = {g.get_attribute("data-id"): g for g in css(driver, "#graph .node[data-kind=stage]")}
    assert set(stages) == {f"stage:{n}" for n in ("prepare", "featurize", "train", "evaluate",
                                                   "fit")}
    assert "file:model.pkl" in {g.get_attribute("data-id")
                                for g in css(driver, "#graph .node[data-kind=file]")}
    stages["stage:train"].find_element(By.TAG_NAME, "rect").click()
    latest = runs["train"][-1]["id"]
    until(driver, lambda d: d.current_url.endswith(f"/runs/{latest}"))
    until(driver, lambda d: f"Run {latest}" in d.find_element(By.TAG_NAME, "h1").text)


def test_lineage_graph_and_clicks_on_its_nodes(driver, base, runs):
    driver.get(base + "/lineage?path=model.pkl")
    until(driver, lambda d: css(d, "#graph[data-rendered]"))
    nodes = {g.get_attribute("data-id"): g for g in css(driver, "#graph .node")}
    train = runs["train"][-1]["id"]
    assert f"run:{train}" in nodes
    assert any(n.startswith("data/data.csv@") for n in nodes)  # all the way to the raw data
    version = next(g for n, g in nodes.items() if n.startswith("data/features/train.pkl@"))
    version.find_element(By.TAG_NAME, "rect").click()
    until(driver, lambda d: "path=data%2Ffeatures%2Ftrain.pkl" in d.current_url)
    until(driver, lambda d: css(d, "#graph[data-rendered]"))
    node = until(driver, lambda d: css(d, "#graph .node[data-kind=run]"))[0]
    run_id = node.get_attribute("data-id").split(":")[1]
    node.find_element(By.TAG_NAME, "rect").click()
    until(driver, lambda d: d.current_url.endswith(f"/runs/{run_id}"))


def test_an_unknown_run_is_a_page_with_one_sentence(driver, base):
    driver.get(base + "/runs/9999")
    text = until(driver, lambda d: css(d, ".error-page .sentence"))[0].text
    assert text.startswith("there is no run 9999")


def test_a_new_run_shows_up_while_the_page_is_open(driver, base, project, runs):
    driver.get(base + "/")
    until(driver, lambda d: css(d, "#runs-table tbody tr"))
    before = table_ids(driver)
    fit(project, 0.2, "--pause", "0.01")  # past the poll tier's 100 ms promise
    settle(project)
    until(driver, lambda d: len(table_ids(d)) == len(before) + 1, timeout=20)
    assert table_ids(driver)[1:] == before
