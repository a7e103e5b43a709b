"""The MLflow UI as a user sees it, in a real browser: the tiny main job's store served by
``mlflow server``, opened in headless Chromium (Debian's package, driven by Playwright). The
runs page shows the stage-1 run with its tuned run nested under it; the comparison link the
job prints first opens the stage-1 run's comparison figure (each stage's few-shot, kNN and
linear accuracy with their intervals); the ranked link sorts by few-shot accuracy; the
compare link shows the tuned run's paired differences. Screenshots land in the test's
directory."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import mlflow_server

from stars.cli.pretrain import main as pretrain_main
from stars.tracking import runs as tr

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _browser_or_skip():
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install playwright)")
    if missing:
        message = "the browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def test_runs_page_nests_the_tuned_run_and_compare_shows_fewshot(
    ray_local, tiny_dataset_dir, tmp_path, capsys
):
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--preset", "tiny", "--data", str(tiny_dataset_dir), "--name", "ui"]
    args += ["--set", f"scale.storage_path={tmp_path / 'runs'}", "--tracking-uri", store]
    args += ["--protocols", "knn,fewshot"]
    assert pretrain_main(args) == 0
    printed = capsys.readouterr().out
    compare = re.search(r"compare:\s+(\S+)", printed).group(1)
    runs_page = re.search(r"runs:\s+(\S+)", printed).group(1)
    comparison = re.search(r"comparison:\s+(\S+)", printed).group(1)
    ranked = re.search(r"ranked:\s+(\S+)", printed).group(1)
    assert "orderByKey=metrics.%60fewshot_5shot_mean%60" in ranked  # best few-shot first
    c = tr.client(store)
    exp = c.get_experiment_by_name("stars-synthetic").experiment_id
    (s1,) = c.search_runs([exp], filter_string=f"tags.`{tr.STAGE}` = 'stage1'")
    (s2,) = c.search_runs([exp], filter_string=f"tags.`{tr.STAGE}` = 'stage2'")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with mlflow_server(store, tmp_path / "server.log") as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1400})
        # The printed link opens the experiment's runs, not the GenAI overview.
        page.goto(runs_page.replace("http://127.0.0.1:5000", base))
        page.get_by_text(s1.info.run_name, exact=True).wait_for(timeout=60_000)
        assert page.get_by_text(s2.info.run_name, exact=True).count() == 0  # collapsed
        page.locator("button[data-component-id*='runnamecellrenderer']").first.click()
        page.get_by_text(s2.info.run_name, exact=True).wait_for(timeout=30_000)
        page.screenshot(path=str(shots / "runs.png"))
        # Ranked by few-shot accuracy (a sorted table is flat: both runs show).
        page.goto(ranked.replace("http://127.0.0.1:5000", base))
        page.get_by_text("Sort: fewshot_5shot_mean").wait_for(timeout=60_000)
        page.get_by_text(s2.info.run_name, exact=True).wait_for(timeout=30_000)
        # The first link: the comparison figure (stages with their intervals) on the
        # stage-1 run, shown as the page opens, in the model-training view.
        page.goto(comparison.replace("http://127.0.0.1:5000", base))
        page.get_by_text("comparison.png").first.wait_for(timeout=60_000)
        page.wait_for_function(  # the figure itself, drawn (served as a blob)
            "() => [...document.images].some(i => i.src.startsWith('blob:') && "
            "i.naturalWidth > 400)",
            timeout=60_000,
        )
        assert page.get_by_text(s1.info.run_name, exact=True).count() >= 1
        assert page.get_by_text("Model training", exact=True).count() >= 1
        page.screenshot(path=str(shots / "comparison.png"))
        # The compare link: every metric of the lineage side by side, the tuned run's paired
        # differences first in its (alphabetical) metrics table.
        page.goto(compare.replace("http://127.0.0.1:5000", base))
        page.get_by_text("Metrics", exact=True).first.wait_for(timeout=90_000)
        page.get_by_text("Metrics", exact=True).first.scroll_into_view_if_needed()
        page.get_by_text("delta_fewshot_1shot_mean", exact=True).first.wait_for(timeout=30_000)
        page.wait_for_timeout(1000)
        text = page.inner_text("body")
        page.screenshot(path=str(shots / "compare.png"), full_page=True)
        browser.close()
    for run in (s1, s2):
        assert run.info.run_name in text
    assert "delta_fewshot_1shot_mean_ci95_low" in text
    assert (shots / "runs.png").stat().st_size > 10_000
    if os.environ.get("STARS_SCREENSHOTS"):  # keep the pictures where a person can see them
        for name in ("runs.png", "compare.png", "comparison.png"):
            shutil.copy(shots / name, Path(os.environ["STARS_SCREENSHOTS"]) / f"mlflow-{name}")
