"""What a bundle sends to Kaggle: the adapter dataset with every local path reduced to what the kernel resolves (the
runs' own records stay beside the bundle in local/, which is never uploaded)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from arena import config as config_mod
from arena.config import Config
from arena.embedded import is_embedded
from arena.layout import Bundle, RunFolder


def kernel_view(cfg: Config, kernel_base: str) -> Config:
    """A run's config as uploaded: model.path is the name the kernel resolves (`kernel_base`, the base model's
    mount; the embedded model's name stays), the data files by their names and the runs folder by its default
    (the kernel reads none of them)."""
    changes = {"train.runs_dir": "runs", "data.train": Path(cfg.data.train).name,
               "data.extra": [Path(p).name for p in cfg.data.extra],
               "data.teacher": [Path(p).name for p in cfg.data.teacher]}
    if not is_embedded(cfg.model.path):
        changes["model.path"] = kernel_base or Path(cfg.model.path).name
    return config_mod.replace(cfg, changes, by="arena package")


def _name(path) -> str:
    """A local path reduced to its folder and file name (a run's, a CV folder's file)."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}"


def keep_local_records(build: Bundle, members: list[tuple[RunFolder, Config, str]]) -> None:
    """Reduce what the adapter dataset says about this machine. `members`: (the member's folder in the dataset, its
    config as the kernel reads it, where the kernel finds its base model) of each run. Each config.yaml, and an
    ensemble's ensemble.json, is kept as it was in the bundle's local/ (for checks and the rehearsal here, never
    uploaded); the dataset's copies name no local path; peft's model card (adapter/README.md, which the kernel does
    not read) is left out, and peft's record of the base model and a merge's record of its runs are reduced."""
    for member, cfg, kernel_base in members:
        local = build.local / member.root.relative_to(build.adapter_dataset) / member.config.name
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(member.config, local)
        uploaded = kernel_view(cfg, kernel_base)
        config_mod.dump(uploaded, member.config)
        (member.adapter / "README.md").unlink(missing_ok=True)
        _rewrite(member.adapter / "adapter_config.json",
                 lambda record, base=uploaded.model.path: record.update(base_model_name_or_path=base))
        if member.is_merged():
            _rewrite(member.head, _merge_by_names)
    if build.ensemble.is_file():
        shutil.copy2(build.ensemble, build.local / build.ensemble.name)

        def reduce(record: dict) -> None:
            for entry in record["members"]:
                entry.update(run=Path(entry["run"]).name, calibration=entry["calibration"] and _name(entry["calibration"]))
            if "fit_on" in record["fit"]:
                record["fit"]["fit_on"] = [_name(p) for p in record["fit"]["fit_on"]]

        _rewrite(build.ensemble, reduce)


def _merge_by_names(head: dict) -> None:
    """A merged run's head.json names the runs merged by their folder names (RunFolder.fingerprint leaves them out)."""
    merged = head.get("merged")
    if isinstance(merged, dict) and isinstance(merged.get("runs"), list):
        merged["runs"] = [Path(r).name for r in merged["runs"]]


def _rewrite(path: Path, change) -> None:
    """A JSON record changed in place by `change(record)` (the bundle's staging copy, built aside), written only
    when it changed; no file: nothing."""
    if path.is_file():
        record = json.loads(path.read_text(encoding="utf-8"))
        before = json.dumps(record)
        change(record)
        if json.dumps(record) != before:
            path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
