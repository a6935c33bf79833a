"""The published CMPlaces numbers cite their papers (authors, title, venue, year, DOI / arXiv id),
not an issue tracker, and every table says which sources it comes from and where in them."""
from __future__ import annotations

import json
import re
from importlib import resources

from crossmodal.evaluate.retrieval import published


def test_every_source_is_a_full_citation_and_nothing_cites_a_tracker():
    """Caught: the data file said its numbers were 'transcribed from the project's issue tracker'."""
    raw = resources.files("crossmodal.evaluate.retrieval").joinpath("published_cmplaces.json").read_text("utf-8")
    assert "tracker" not in raw.lower() and "issue" not in raw.lower()
    data = published.load_published()
    cvpr, arxiv = data["sources"]["castrejon2016"], data["sources"]["aytar2016"]
    assert "Castrejón" in cvpr["citation"] and "Learning Aligned Cross-Modal Representations from Weakly " \
        "Aligned Data" in cvpr["citation"] and "CVPR" in cvpr["citation"] and "2016" in cvpr["citation"]
    assert cvpr["doi"] == "10.1109/CVPR.2016.321" and "doi:10.1109/CVPR.2016.321" in cvpr["citation"]
    assert "Aytar" in arxiv["citation"] and "Cross-Modal Scene Networks" in arxiv["citation"]
    assert arxiv["arxiv"] == "1610.09003" and "arXiv:1610.09003" in arxiv["citation"]
    for name, table in data["tables"].items():
        assert table["sources"] and set(table["sources"]) <= set(data["sources"]), name
        assert set(table["location"]) == set(table["sources"]), name  # where in each source (None: unchecked)
        for source, where in table["location"].items():  # "Table 3: <caption's first words>"
            assert where is None or re.match(r"(Table|Figure) \d+: \S", where), (name, source, where)
        if not all(table["location"].values()):
            assert table["location_note"].startswith("not yet checked"), name


def test_the_retrieval_report_prints_the_full_citations():
    from crossmodal.evaluate.retrieval.reports import published_comparison
    pub = published_comparison([{"query": "sketch", "target": "natural"}])
    assert pub["sources"]["castrejon2016"].endswith("doi:10.1109/CVPR.2016.321.")
    assert "arXiv:1610.09003" in pub["sources"]["aytar2016"]
    assert json.dumps(pub).count("tracker") == 0


def test_unchecked_tables_say_why_and_the_sketch_mapping_follows_figure_1():
    """The papers' results tables could not be read: nothing claims a table number; sketches are the
    papers' line drawings (LDR), spatial text (SPT) is kept under its own name (their Figure 1)."""
    data = published.load_published()
    for name, table in data["tables"].items():
        assert table["location"] == {"castrejon2016": None, "aytar2016": None}, name
        assert "could not be read" in table["location_note"] and "values" in table["location_note"], name
    assert data["toolkit_modalities"] == {"natural": "NAT", "clipart": "CLP", "sketch": "LDR"}
    assert data["modalities"]["SPT"] == "spatial text" and data["modalities"]["LDR"].startswith("line drawings")
    assert "Figure 1" in data["modalities_note"] and "transcription" in data["modalities_note"]


def _report_results(pub: dict) -> dict:
    pairs = [{"query": "natural", "target": "clipart", "map": 0.05, "precision_at_k": 0.08, "k": 10},
             {"query": "sketch", "target": "sketch", "map": 0.3, "precision_at_k": 0.4, "k": 10}]
    return {"published": pub, "pairs": pairs, "model": {"name": "m"}, "layer": "fc7", "metric": "cosine"}


def test_the_markdown_report_says_where_each_table_is_printed():
    from crossmodal.evaluate.retrieval import reports as rr
    pub = rr.published_comparison([{"query": "natural", "target": "clipart"},
                                   {"query": "sketch", "target": "sketch"}])
    assert pub["locations"]["cross_modal_map"]["location"] == {"castrejon2016": None, "aytar2016": None}
    md = "\n".join(rr._published_tables(_report_results(pub)))
    unchecked = "Printed in: castrejon2016: not yet checked against the paper; aytar2016: not yet checked " \
                "against the paper."
    assert md.count(unchecked) == 3  # within-modal mAP, cross-modal mAP, cross-modal P@10
    assert md.count("> Values and table numbers not yet checked against the papers: the text of their") == 1
    assert "spatial text" in md


def test_a_checked_location_is_printed_beside_its_table(monkeypatch):
    from crossmodal.evaluate.retrieval import reports as rr
    data = published.load_published()
    for i, table in enumerate(data["tables"].values()):
        table["location"] = {"castrejon2016": f"Table {i + 1}: Caption A", "aytar2016": f"Table {i + 5}: Caption B"}
    monkeypatch.setattr(rr, "load_published", lambda: data)
    md = "\n".join(rr._published_tables(_report_results(rr.published_comparison(
        [{"query": "natural", "target": "clipart"}, {"query": "sketch", "target": "sketch"}]))))
    assert "Printed in: castrejon2016: Table 1: Caption A; aytar2016: Table 5: Caption B." in md  # within-modal
    assert "Printed in: castrejon2016: Table 2: Caption A; aytar2016: Table 6: Caption B." in md  # cross-modal
    assert "not yet checked against the paper;" not in md and "> Values and table numbers" not in md
