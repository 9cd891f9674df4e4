"""Server-rendered SVG charts: the heat map's metric, its legend, and text escaped."""

from server.dashboard import charts

WORDS = {"heatmap": "h", "index": "지수", "count": "건수", "no_data": "없음", "trend": "t", "bars": "b",
         "none": "없음"}


def test_heat_map_cells_print_the_chosen_metric_coloured_by_index():
    cells = {(9, 1): (62, 69.4)}
    by_index = charts.heatmap(cells, list("월화수목금토일"), labels=WORDS)
    by_count = charts.heatmap(cells, list("월화수목금토일"), labels=WORDS, metric="count")
    assert ">69.4</text>" in by_index and ">62</text>" not in by_index
    assert ">62</text>" in by_count and ">69.4</text>" not in by_count
    assert charts._heat_colour(69.4) in by_index and charts._heat_colour(69.4) in by_count
    assert "지수 69.4, 건수 62" in by_index  # the cell's tooltip names both


def test_legend_and_labels_are_escaped():
    legend = charts.heat_legend(words={"index": "<b>", "no_data": "&"})
    assert "&lt;b&gt;" in legend and "&amp;" in legend and "<b>" not in legend
    bars = charts.bars([("<script>", 1, None)], labels=WORDS)
    assert "<script>" not in bars and "&lt;script&gt;" in bars
