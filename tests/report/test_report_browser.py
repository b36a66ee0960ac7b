"""The report in a real browser: headless Chromium loads index.html from disk, every image on
the page loads, and a screenshot is produced."""

from __future__ import annotations

import re

from report_browser import image_states, screenshot

from curriculum.report import build_report


def test_every_image_loads_in_chromium_and_a_screenshot_is_taken(report_runs, tmp_path) -> None:
    result = build_report([report_runs.attributed, report_runs.policy_only],
                          labels=report_runs.labels, out=tmp_path / "report")
    page = result.index.read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    drawn = [f.image for f in result.figures.values() if f.image]
    assert sorted(sources) == sorted(drawn) and len(drawn) >= 6
    assert "http://" not in page and "https://" not in page and "<script" not in page

    states = image_states(result.index, tmp_path / "profile")
    assert [src for src, _, _ in states] == sources
    broken = [src for src, complete, width in states if not complete or width == 0]
    assert not broken, f"images that did not load: {broken}"

    png = tmp_path / "report.png"
    screenshot(result.index, png, tmp_path / "profile")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_a_broken_image_reference_is_seen_by_the_check(report_runs, tmp_path) -> None:
    """The check can fail: a page whose image file is gone reports width 0 for it."""
    result = build_report([report_runs.policy_only], out=tmp_path / "report")
    (result.out_dir / "spool.png").unlink()
    states = dict((src, width) for src, _, width in image_states(result.index, tmp_path / "p"))
    assert states["spool.png"] == 0 and states["probe_loss.png"] > 0
