"""The SVG charts (dashboard/charts.py): well-formed, labelled, figures in text."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from sipbridge.dashboard.charts import bar_list, column_chart, heat_map, nice_ceiling

SVG = "{http://www.w3.org/2000/svg}"


def _parse(markup: str) -> ET.Element:
    return ET.fromstring(
        str(markup).replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1)
    )


def test_nice_ceiling() -> None:
    assert [nice_ceiling(v) for v in (0, 1, 3, 7, 11, 24, 26, 99, 101, 4800)] == [
        1,
        1,
        5,
        10,
        20,
        25,
        50,
        100,
        200,
        5000,
    ]


def test_column_chart_has_a_bar_and_a_title_per_point() -> None:
    svg = _parse(column_chart([("03-01", 5), ("03-02", 0), ("03-03", 12)], title="Calls <per> day"))
    assert svg.get("role") == "img"
    assert svg.find(f"{SVG}title").text == "Calls <per> day"  # escaped in the markup
    bars = svg.findall(f"{SVG}rect")
    assert [bar.find(f"{SVG}title").text for bar in bars] == [
        "03-01: 5 calls",
        "03-02: 0 calls",
        "03-03: 12 calls",
    ]
    heights = [float(bar.get("height")) for bar in bars]
    assert heights[1] == 0 and heights[2] > heights[0] > 0
    assert "17 calls in all" in svg.find(f"{SVG}desc").text


def test_bar_list_prints_each_value() -> None:
    svg = _parse(bar_list([("agent_unreachable", 7), ("a" * 40, 2)], title="Reasons"))
    texts = [t.text for t in svg.iter(f"{SVG}text")]
    assert "agent_unreachable" in texts and "7" in texts and "2" in texts
    assert "a" * 29 + "…" in texts  # long labels are cut; the full one is in the title
    assert f"{'a' * 40}: 2 calls" in [t.text for t in svg.iter(f"{SVG}title")]


def test_heat_map_prints_counts_and_names_the_busiest_hour() -> None:
    matrix = [[0] * 24 for _ in range(7)]
    matrix[0][9] = 3
    matrix[4][17] = 12_345
    svg = _parse(heat_map(matrix, title="Peak"))
    assert "busiest: Fri 17:00 (12345 calls)" in svg.find(f"{SVG}desc").text
    cells = [t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "cell"]
    assert cells == ["3", "12k"]
    assert len(svg.findall(f".//{SVG}rect")) == 7 * 24
