"""Kaggle bundles for tests: a small run config targeting Kaggle, and a bundle's layout without building one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from arena import config
from arena.kaggle import bundle as bundle_mod
from arena.kaggle import credentials, preflight
from arena.layout import Bundle


def kaggle_cfg(**kaggle_section):
    return config.from_dict({"name": "t", "model": {"path": "embedded:gemma3-270m", "family": "plain"},
                             "infer": {"max_length": 128}, "kaggle": kaggle_section})


def fake_bundle(root: Path, cfg, user: str = credentials.PLACEHOLDER_USER, projection: dict | None = None,
                 adapter: Path | None = None) -> Path:
    """A bundle's layout without building one (no wheelhouse download); with `adapter` (a trained run's) it is
    whole enough for every check `arena push --bundle` makes."""
    bundle = Bundle(root / "bundle")
    for part in Bundle.PARTS:
        (bundle.root / part).mkdir(parents=True)
    if adapter is None:
        bundle.run.adapter.mkdir()
    else:
        shutil.copytree(adapter, bundle.run.adapter)
    config.dump(cfg, bundle.run.config)
    for wheel in ("arena-0.1.0-py3-none-any.whl", "transformers-5.23.0-py3-none-any.whl"):
        (bundle.wheels / wheel).write_bytes(b"")
    bundle.wheel_requirements.write_text("arena==0.1.0\ntransformers==5.23.0\n")
    bundle_mod.write_metadata(bundle, cfg, user)
    bundle.kernel_script.write_text(bundle_mod.render_kernel_script(cfg))
    pf = projection or preflight.project_runtime(400, 25000, True, 2000, 9.0) | {"method": "test"}
    bundle.preflight.write_text(json.dumps(pf))
    return bundle.root


