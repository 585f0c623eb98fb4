"""The embedded model's cache folder (ARENA_CACHE): checked before any work."""

from __future__ import annotations

import pytest

from arena import embedded
from arena.errors import UserError


def test_an_empty_arena_cache_is_refused_instead_of_filling_the_current_folder(monkeypatch):
    monkeypatch.setenv("ARENA_CACHE", "")
    with pytest.raises(UserError, match="ARENA_CACHE is set but empty"):
        embedded.resolve_model_path("embedded:gemma3-270m")


def test_an_arena_cache_that_is_a_file_is_refused(monkeypatch, tmp_path):
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("ARENA_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError, match="a file, not a folder"):
        embedded.resolve_model_path("embedded:gemma3-270m")


def test_a_cache_inside_a_file_cannot_take_the_conversion(monkeypatch, tmp_path):
    (tmp_path / "blocker").write_text("")
    monkeypatch.setenv("ARENA_CACHE", str(tmp_path / "blocker" / "cache"))
    with pytest.raises(UserError, match="blocker is a file, not a folder, so the converted embedded model"):
        embedded.resolve_model_path("embedded:gemma3-270m")
