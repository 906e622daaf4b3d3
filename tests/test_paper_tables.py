"""The paper-table registry: names, aliases, the score groups tables need, order, and refusal of duplicates."""

from __future__ import annotations

import pytest

from iqalab import paper_tables
from iqalab.paper_tables import registry


def test_table_names_are_the_tags_params_may_use() -> None:
    names = paper_tables.table_names()
    assert len(names) == len(set(names)), "a tag selects one table"
    assert {"tuningiqa_table2", "fhiqa_table1", "reqa_table1", "sfiqa_table6"} <= set(names)
    assert {"reqa_table5", "reqa_table6"} <= set(names), "REQA Tables V-VI are aliases of the ablation layout"
    assert "tuningiqa_tabel2" not in names and "all_metrics" not in names, "all_metrics is always written"


def test_tables_come_in_the_papers_order_and_live_in_their_paper_module() -> None:
    entries = paper_tables.registered_tables()
    papers = [entry.paper for entry in entries]
    assert papers == sorted(papers, key=registry.PAPERS.index), "TuningIQA, FHIQA, REQA, SFIQA"
    assert all(entry.name.startswith(entry.paper) for entry in entries)


def test_score_groups_follow_the_tables_that_read_them() -> None:
    assert paper_tables.tags_needing("tier") == {"reqa_table1", "reqa_ablation", "reqa_table5", "reqa_table6"}
    assert paper_tables.tags_needing("scene_median") == {"fhiqa_table1"}


def test_a_tag_cannot_be_registered_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_TABLES", dict(registry._TABLES))  # leave the real registry untouched

    def table(ctx, exps):  # noqa: ANN001, ANN202
        return None

    with pytest.raises(ValueError, match="'reqa_table5' is registered twice"):
        registry.register_table("reqa_extra", aliases=("reqa_table5",))(table)
    registry.register_table("reqa_extra")(table)
    assert registry.table_names()[-1] == "reqa_extra", "a table outside the four papers comes last"
