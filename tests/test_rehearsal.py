"""`arena kernel run-local`: the room its --work needs, checked before any work; where its input test.csv may be."""

from __future__ import annotations

import pytest

from arena import data
from arena.errors import UserError
from arena.kaggle import rehearsal
from arena.layout import Bundle, RunFolder
from arena.task import THREE_WAY
from tests.files import touch
from tests.kaggle_bundles import fake_bundle, kaggle_cfg

LABEL_COLUMNS = THREE_WAY.label_columns


def test_a_work_folder_on_a_disk_without_room_is_refused_before_any_work(tiny_run, tmp_path, small_disk,
                                                                        no_credentials):
    bundle = fake_bundle(tmp_path, kaggle_cfg(), adapter=RunFolder(tiny_run).adapter)
    (bundle / "wheels-dataset" / "big-1.0-py3-none-any.whl").write_bytes(b"\0" * (8 * 2**20))  # 3 x 8 + 64 > 72
    test_csv = tmp_path / "input" / "test.csv"
    data.write_csv(data.generate_sample(6, seed=1).drop(columns=LABEL_COLUMNS), test_csv)
    with pytest.raises(UserError, match=r"--work .*work: \d+ MiB free on its disk; the rehearsal needs about 88 MiB"):
        rehearsal.run_local(bundle, test_csv.parent, work_dir=small_disk / "work")
    assert list(small_disk.iterdir()) == []


@pytest.mark.parametrize("competition, name", [("llm-classification-finetuning", "test.csv"),
                                               ("wsdm-cup-multilingual-chatbot-arena", "test.parquet"),
                                               ("wsdm-cup-multilingual-chatbot-arena", "train.parquet")])
def test_rehearsal_input_may_be_the_file_its_folder_or_a_kaggle_input_root(work, competition, name):
    found = touch(work / "input" / competition / name)
    for given in (work / "input", found.parent, found):
        assert rehearsal.find_competition_file(given, competition, name) == found
    assert rehearsal.find_competition_file(work, competition, name) is None
    other = touch(work / "other" / "test.csv")  # the LMSYS data's file is not the WSDM Cup's test.parquet
    assert rehearsal.find_competition_file(other, competition, name) is (other if name == "test.csv" else None)


@pytest.mark.parametrize("competition", [None, "lmsys-chatbot-arena", "wsdm-cup-multilingual-chatbot-arena"])
def test_the_rehearsal_mounts_the_configured_competition_in_either_layout(tmp_path, competition):
    cfg = kaggle_cfg(**({"competition": competition} if competition else {}))
    slug = competition or "llm-classification-finetuning"  # the default
    bundle = Bundle(fake_bundle(tmp_path, cfg, user="alice"))
    mounts = {layout: rehearsal._mounts(bundle, cfg, [], layout) for layout in rehearsal.LAYOUTS}
    assert mounts["current"] == {f"competitions/{slug}": None, "datasets/alice/arena-adapter": bundle.adapter_dataset,
                                 "datasets/alice/arena-wheels": bundle.wheels}
    assert mounts["old"] == {slug: None, "arena-adapter": bundle.adapter_dataset, "arena-wheels": bundle.wheels}
