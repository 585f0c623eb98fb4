"""Run by tests/test_distributed.py in several processes (`accelerate launch` or torchrun): what a test needs to
see from inside the ranks. `python -m tests.distributed_probe {shards,stop-after,fsdp,delayed-predict} CONFIG_JSON ...`"""

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
    processes, full precision: bitsandbytes' 4-bit weights do not shard on CPU) against the same step in one
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
    ids, mask = model_mod.left_pad(rows, 0)
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
        elif command == "delayed-predict":
            delayed_predict(*rest)
        else:
            raise SystemExit(f"unknown probe {command}")
    finally:
        processes.finish()


if __name__ == "__main__":
    main()
