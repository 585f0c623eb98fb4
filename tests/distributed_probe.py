"""Run by tests/test_distributed.py in several processes (`accelerate launch` or torchrun): what a test needs to
see from inside the ranks. `python -m tests.distributed_probe {shards,stop-after,fsdp,fsdp-save,delayed-predict} CONFIG_JSON ...`"""

import json
import sys

import torch


def shards(cfg) -> None:
    """Each rank's micro-batches of one epoch, as indices into the training dataset, gathered on the main process
    and printed as JSON."""
    from arena import processes, train

    split = train.prepare_data(cfg)
    built = train.build(cfg, split)
    run = train.open_run_folder(cfg, cpu=True)
    trainer = train.make_trainer(cfg, run, built, split)
    batches = [train_indices(trainer.train_dataset, batch) for batch in trainer.get_train_dataloader()]
    gathered = processes.gather_to_main(batches, cpu=True)
    if gathered is not None:
        print("SHARDS " + json.dumps(gathered), flush=True)


def train_indices(dataset, batch) -> list[int]:
    """The dataset indices of a collated batch's rows, found by their tokens (the sample's rows are distinct)."""
    where = {tuple(ids): i for i, ids in enumerate(dataset.input_ids)}
    return [where[tuple(ids[mask.bool()].tolist())] for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]


def stop_after(cfg, step: int) -> None:
    """Train until the checkpoint of `step` is saved, then stop every rank as a kill would."""
    from arena import train
    from tests.tiny import StopAfterCheckpoint

    train.train(cfg, callbacks=[StopAfterCheckpoint(step)])


def fsdp(cfg) -> None:
    """One step of the adapter under FSDP2 (each decoder layer and the whole model sharded over the gloo
    processes, in full precision) against the same step in one
    process on the whole batch: the loss and the adapter's gradients agree."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from arena import model as model_mod

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model, _, _ = model_mod.build_for_training(cfg)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)  # let gradients reach every adapter
    rows = [[5, 6, 7, 8, 9], [10, 11, 12], [13, 14, 15, 16], [17, 18], [19, 20, 21], [22, 23, 24, 25]]
    ids, mask = model_mod.right_pad(rows, 0)
    model(input_ids=ids, attention_mask=mask).logsumexp(-1).mean().backward()
    whole = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    for layer in model.base_model.model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    share = slice(rank * len(rows) // world, (rank + 1) * len(rows) // world)
    model(input_ids=ids[share], attention_mask=mask[share]).logsumexp(-1).mean().backward()
    worst = 0.0
    for name, param in model.named_parameters():
        if param.grad is not None:
            grad = param.grad.full_tensor()  # FSDP averages the ranks' gradients, as the whole batch's mean does
            worst = max(worst, (grad - whole[name]).abs().max().item())
    sharded = any(type(p).__name__ == "DTensor" for p in model.parameters())
    if rank == 0:
        print("FSDP " + json.dumps({"world": world, "sharded": sharded, "max_grad_diff": worst,
                                    "grads": len(whole)}), flush=True)
    dist.destroy_process_group()


def fsdp_save(cfg, run_dir: str) -> None:
    """`save_adapter` of a model sharded by FSDP2 over the gloo processes (full precision, as in fsdp()): how many
    weights were made whole (every DTensor redistribution counted) and handed to peft's save, against the trainable
    ones, and how far the saved adapter is from the weights before sharding."""
    import os
    import types

    import numpy as np
    import torch.distributed as dist
    from peft import PeftModel
    from safetensors.torch import load_file
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from arena import model as model_mod
    from arena import train
    from arena.layout import RunFolder

    os.environ.update(ACCELERATE_USE_FSDP="true", FSDP_VERSION="2")  # as `accelerate launch` with an FSDP2 config
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    built = train.Built(*model_mod.build_for_training(cfg), scaler=None)
    assert built.runtime.sharded
    for name, param in built.model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)  # weights that differ from their initial zeros
    trainable = {name: p.detach().clone() for name, p in built.model.named_parameters() if p.requires_grad}
    total = sum(p.numel() for p in built.model.parameters())
    for layer in built.model.base_model.model.model.layers:
        fully_shard(layer)
    fully_shard(built.model)
    gathered, handed = [], []
    redistribute, save_pretrained = DTensor.redistribute, PeftModel.save_pretrained

    def counted_redistribute(self, *args, **kwargs):
        gathered.append(self.numel())
        return redistribute(self, *args, **kwargs)

    def counted_save(self, *args, state_dict=None, **kwargs):
        handed.extend(t.numel() for t in (state_dict or {}).values())
        return save_pretrained(self, *args, state_dict=state_dict, **kwargs)

    DTensor.redistribute, PeftModel.save_pretrained = counted_redistribute, counted_save
    trainer = types.SimpleNamespace(model=built.model, accelerator=fsdp2_accelerator(),
                                    is_world_process_zero=lambda: rank == 0)
    split = train.Split(train=None, val=None, prior=np.full(3, 1 / 3), prior_log_loss=0.0)
    train.save_adapter(cfg, RunFolder(run_dir), built, split, trainer)
    DTensor.redistribute, PeftModel.save_pretrained = redistribute, save_pretrained
    dist.barrier()
    if rank == 0:
        saved = load_file(RunFolder(run_dir).adapter / "adapter_model.safetensors")
        # peft's names on disk drop the adapter's name ("default") and the modules_to_save wrapper
        whole = {name.replace("modules_to_save.", "").replace(".default", ""): t for name, t in trainable.items()}
        print("FSDPSAVE " + json.dumps({
            "gathered": sum(gathered), "handed_to_save": sum(handed), "total": total,
            "trainable": sum(t.numel() for t in trainable.values()), "saved": sorted(saved), "expected": sorted(whole),
            "max_diff": max((saved[k].float() - whole[k].float()).abs().max().item() for k in saved if k in whole),
        }), flush=True)


def fsdp2_accelerator():
    """accelerate's Accelerator as `accelerate launch` with an FSDP2 config makes it on GPUs (on CPU it never switches
    to FSDP by itself): what the Trainer's `accelerator` is in an FSDP run."""
    from accelerate import Accelerator, FullyShardedDataParallelPlugin
    from accelerate.utils import DistributedType

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2)
    accelerator = Accelerator(fsdp_plugin=plugin)
    accelerator.state.distributed_type, accelerator.state.fsdp_plugin = DistributedType.FSDP, plugin
    assert accelerator.is_fsdp2
    return accelerator


def delayed_predict(run_dir: str, test_csv: str, out: str, delay_s: str) -> None:
    """`arena predict` in a process group whose collectives time out after 5 s, with rank 1 starting its share
    `delay_s` seconds late (as a slower GPU finishes hours late): the predictions must still meet."""
    import time
    from datetime import timedelta

    import torch.distributed as dist

    from arena import model as model_mod
    from arena import predict

    dist.init_process_group("gloo", timeout=timedelta(seconds=5))  # accelerate's state reuses this group
    if dist.get_rank() == 1:
        load = model_mod.load_trained

        def late_load(*args, **kwargs):
            time.sleep(float(delay_s))
            return load(*args, **kwargs)

        model_mod.load_trained = late_load
    predict.predict_file(run_dir, test_csv, out, overrides=["model.device=cpu"])


def main() -> None:
    from arena import config

    command, cfg_json, *rest = sys.argv[1:]
    cfg = config.from_dict(json.loads(cfg_json))
    from arena import processes

    try:
        if command == "shards":
            shards(cfg)
        elif command == "stop-after":
            stop_after(cfg, int(rest[0]))
        elif command == "fsdp":
            fsdp(cfg)
        elif command == "fsdp-save":
            fsdp_save(cfg, *rest)
        elif command == "delayed-predict":
            delayed_predict(*rest)
        else:
            raise SystemExit(f"unknown probe {command}")
    finally:
        several = processes.finish()
    if several:
        processes.leave(0)  # as `arena` ends a rank


if __name__ == "__main__":
    main()
