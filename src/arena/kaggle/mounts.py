"""Where Kaggle mounts a bundle's inputs under /kaggle/input, in its current layout or the older one (image.MOUNTS):
the configured competition, the adapter and wheels datasets, each member's base model. `arena kernel run-local`
links them there, so that the kernel finds them as it would on Kaggle."""

from __future__ import annotations

import json
from pathlib import Path

from arena.kaggle import image as image_mod
from arena.kaggle.bundle import kernel_base_model
from arena.layout import Bundle

LAYOUTS = ("current", "old")  # in the order of each image.MOUNTS list


def local_base(member_cfg, base_model=None) -> Path:
    """The base model folder on this machine: --base-model (the run's model.path moved since training), else it."""
    return Path(base_model or member_cfg.model.path).expanduser()


def bundle_mounts(bundle: Bundle, cfg, members, layout: str, base_model=None) -> dict[str, Path | None]:
    """Where Kaggle mounts each input (relative to /kaggle/input) -> what to link there, in `layout`; the
    competition's folder -> None (the rehearsal links only its test file there). `members`: (run, config, whether
    it needs its base model) of each run the kernel predicts with."""
    owner = json.loads(bundle.kernel_metadata.read_text(encoding="utf-8"))["id"].split("/")[0]
    k = cfg.kaggle
    at = LAYOUTS.index(layout)
    mounts = {image_mod.MOUNTS["competition"][at].format(slug=k.competition): None}
    for slug, folder in ((k.adapter_dataset_slug, bundle.adapter_dataset), (k.wheels_dataset_slug, bundle.wheels)):
        mounts[image_mod.MOUNTS["dataset"][at].format(owner=owner, slug=slug)] = folder
    for _, member_cfg, needs_base in members:
        if needs_base:
            mounts.setdefault(base_mount(member_cfg, layout == "current"), local_base(member_cfg, base_model))
    return mounts


def base_mount(cfg, current: bool) -> str:
    """Where Kaggle mounts the base model of `cfg` (relative to /kaggle/input): its Kaggle model or dataset in
    the current or old layout, plus any sub-folder the old kaggle.base_model_kernel_path names inside it."""
    k = cfg.kaggle
    path = Path(kernel_base_model(cfg))
    given = path.relative_to("/kaggle/input").parts if path.is_relative_to("/kaggle/input") else path.parts
    if len(k.base_model_source.split("/")) == 5:
        owner, model, framework, variation, version = k.base_model_source.split("/")
        old = [model, framework.lower(), variation, version]
        new = ["models", owner, *old]
    elif k.base_model_dataset:
        owner, slug = k.base_model_dataset.split("/")
        old, new = [slug], ["datasets", owner, slug]
    else:  # only the old kaggle.base_model_kernel_path: exactly there
        return "/".join(given)
    sub = list(given[len(old):]) if list(given[:len(old)]) == old else []
    return "/".join((new if current else old) + sub)
