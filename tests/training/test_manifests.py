"""Manifests trained together must have distinct cut ids: the one check every path shares."""

from __future__ import annotations

import pytest
from lhotse import CutSet

from tests.training.test_train import tiny_corpus  # noqa: F401 (fixture)
from training.data.manifests import check_distinct_ids
from training.experiments import concat_manifests


def test_check_distinct_ids_names_the_shared_id_and_both_parts() -> None:
    check_distinct_ids([("a.jsonl.gz", ["x", "y"]), ("b.jsonl.gz", ["z"])])  # distinct: passes
    with pytest.raises(ValueError, match=r"cut id 'y' is in both a\.jsonl\.gz and b\.jsonl\.gz"
                                         r".*--id-prefix"):
        check_distinct_ids([("a.jsonl.gz", ["x", "y"]), ("b.jsonl.gz", ["z", "y"])])


def test_concat_manifests_joins_named_cuts_and_refuses_a_shared_id(tiny_corpus, tmp_path) -> None:  # noqa: F811
    train, dev = tiny_corpus / "cuts_train.jsonl.gz", tiny_corpus / "cuts_dev.jsonl.gz"
    t_ids, d_ids = list(CutSet.from_file(train).ids)[:2], list(CutSet.from_file(dev).ids)[:1]
    out = concat_manifests([(train, t_ids), (dev, d_ids)], tmp_path / "both.jsonl.gz")
    assert sorted(CutSet.from_file(out).ids) == sorted(t_ids + d_ids)
    with pytest.raises(ValueError, match=f"cut id '{t_ids[0]}' is in both .*cuts_train.*"
                                         r"and .*cuts_train"):
        concat_manifests([(train, t_ids), (train, t_ids[:1])], tmp_path / "clash.jsonl.gz")
    assert not (tmp_path / "clash.jsonl.gz").exists()  # refused before anything is written
