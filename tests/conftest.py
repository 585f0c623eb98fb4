import os
from pathlib import Path

import pytest

from arena.cli import OFFLINE_ENV

for _name, _value in OFFLINE_ENV.items():  # as `arena` sets them, before anything loads transformers
    os.environ.setdefault(_name, _value)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from tests.tiny import tiny_tokenizer as make

    return make()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tests.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-gemma2"), "gemma2")
