"""Kaggle credentials read as the CLI reads them, and no token in any message, whatever its length or form."""

from __future__ import annotations

import pytest

from arena.errors import UserError
from arena.kaggle import credentials


def test_a_token_longer_than_a_file_name_is_a_token_and_never_quoted(no_credentials, monkeypatch):
    token = "KGAT_" + "x7" * 200  # 405 characters: too long for a file name (pathlib raised, quoting it)
    monkeypatch.setenv("KAGGLE_API_TOKEN", token)
    found = credentials.find_credentials()
    assert found.method == "access token (KAGGLE_API_TOKEN)" and token in found.secret_values


@pytest.mark.parametrize("form", ["folder", "undecodable"])
def test_a_token_path_that_is_no_token_file_is_named_without_its_content(no_credentials, tmp_path, monkeypatch,
                                                                         form):
    target = tmp_path / "token"
    if form == "folder":
        target.mkdir()
    else:
        target.write_bytes(b"\xff\xfeKGAT_secret\x80")
    monkeypatch.setenv("KAGGLE_API_TOKEN", str(target))
    with pytest.raises(UserError, match="folder" if form == "folder" else "not a text file") as caught:
        credentials.find_credentials()
    assert str(target) in str(caught.value) and "KGAT_secret" not in str(caught.value)


def test_an_undecodable_access_token_file_is_named(no_credentials, monkeypatch):
    from pathlib import Path

    stored = Path.home() / ".kaggle" / "access_token"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"\xc3\x28KGAT_secret")
    with pytest.raises(UserError, match="access_token: not a text file") as caught:
        credentials.find_credentials()
    assert "KGAT_secret" not in str(caught.value)
