"""records.read_record: the one reader of arena's JSON records, whose failure says why without the caller's help."""

from __future__ import annotations

import pytest

from arena.records import RecordError, read_record, record_or_none


def test_a_record_reads_back_as_its_object(tmp_path):
    (tmp_path / "head.json").write_text('{"bias": true}')
    assert read_record(tmp_path / "head.json") == {"bias": True}


@pytest.mark.parametrize("content, why", [
    (None, "missing (the head)"),
    (b'{"bias": tru', "not valid JSON (JSONDecodeError: "),
    (b"\xff\xfe{}", "not valid JSON (UnicodeDecodeError: "),
    (b"[1, 2]", "a JSON list, not an object (the head)"),
    ("folder", "not readable (Is a directory)"),
])
def test_each_way_a_record_fails_is_named_with_its_file(tmp_path, content, why):
    path = tmp_path / "head.json"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(RecordError) as caught:
        read_record(path, "the head")
    assert str(caught.value).startswith(f"{path}: {why}") and caught.value.missing == (content is None)
    assert str(caught.value).endswith("; the file is damaged") == why.startswith("not valid JSON")
    problems = []
    assert record_or_none(path, problems, "the head") is None and problems == [str(caught.value)]
    problems = []
    assert record_or_none(path, problems, missing_is_a_problem=False) is None
    assert len(problems) == (content is not None)


def test_a_secret_files_parse_error_names_only_its_kind(tmp_path):
    path = tmp_path / "kaggle.json"
    path.write_text('{"username": "me", "key": "0123456789abcdef"')  # cut short
    with pytest.raises(RecordError) as caught:
        read_record(path, quote_errors=False)
    assert "0123456789abcdef" not in str(caught.value) and "(JSONDecodeError)" in str(caught.value)
