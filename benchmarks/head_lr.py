"""`python -m benchmarks.head_lr --work DIR [--rows N]`: does the head's own learning rate undo its start?

Writes the benchmark's split (benchmarks.split.build_split with the full plan and the default config's seed, as
`make bench` does) into DIR, builds the default model on its training file as `arena train` would (fold 0 of the
plan's folds held out for checkpoint selection, data.max_rows), and captures the base model's last-token hidden
states of N training rows and of every selection row: the head's inputs at step 0, the adapter being zero there.
Then it trains the head alone on them, as the Trainer would (AdamW, batches of the recipe's global batch, linear
decay after warmup, gradient clipping), at several head learning rates, and prints the selection rows' log loss
along the way. The arena `sweep` of whole runs is the measure; this isolates the head in a minute of compute."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from arena import metrics, train
from arena.layout import RunFolder
from arena.model.head import PreferenceHead
from benchmarks.split_config import benchmark_config

HEAD_LEARNING_RATES = (2e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5)


def head_inputs(trainer, built, rows) -> torch.Tensor:
    """The hidden states the head reads (before its RMS normalisation) for `rows`, in their order."""
    captured = []
    hooks = [m.register_forward_hook(lambda m, args, out: captured.append(args[0].detach().float()))
             for m in built.model.modules() if isinstance(m, PreferenceHead)]  # peft's copy runs, not the original
    built.model.eval()
    with torch.no_grad():
        for batch in torch.utils.data.DataLoader(rows, batch_size=8, collate_fn=trainer.data_collator):
            batch.pop("labels")
            built.model(**batch)
    for hook in hooks:
        hook.remove()
    return torch.cat(captured)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.head_lr", description=__doc__.split("\n")[0])
    parser.add_argument("--work", required=True, help="folder for the split (train.csv, eval.csv)")
    parser.add_argument("--rows", type=int, default=64, help="training rows whose hidden states train the head")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cfg = benchmark_config(work, name="head-lr")
    torch.manual_seed(cfg.seed)
    split = train.prepare_data(cfg)
    built = train.build(cfg, split)
    trainer = train.make_trainer(cfg, RunFolder(work / "runs" / "unused"), built, split)
    head = [m for m in built.model.modules() if isinstance(m, PreferenceHead)][-1]
    tr, va = trainer.train_dataset.subset(np.arange(args.rows)), trainer.eval_dataset
    h_tr, h_va = head_inputs(trainer, built, tr), head_inputs(trainer, built, va)
    y_tr, f_tr, f_va = torch.tensor(tr.labels), torch.tensor(tr.features), torch.tensor(va.features)
    normed = h_tr * torch.rsqrt(h_tr.pow(2).mean(-1, keepdim=True) + 1e-6)
    print(f"hidden size {h_tr.shape[1]}; RMS-normalised hidden state: L1 norm per row {normed.abs().sum(-1).mean():.1f}, "
          f"cosine of the rows to their mean {torch.cosine_similarity(normed, normed.mean(0, keepdim=True)).mean():.3f}")
    start = {k: v.clone() for k, v in head.state_dict().items()}

    def selection_log_loss() -> float:
        with torch.no_grad():
            return metrics.log_loss(va.labels, torch.softmax(head(h_va, f_va), -1).numpy())

    print(f"start: selection log loss {selection_log_loss():.4f} ({len(va.labels)} rows)")
    t = cfg.train
    batch = t.per_device_batch_size * t.grad_accum
    steps = math.ceil(len(split.train) / batch * t.epochs)
    warmup = max(1, math.ceil(t.warmup_ratio * steps))
    for lr in HEAD_LEARNING_RATES:
        head.load_state_dict(start)
        opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(  # linear warmup, then linear decay to zero
            opt, lambda s: min((s + 1) / warmup, (steps - s) / (steps - warmup + 1)))
        draw = torch.Generator().manual_seed(0)
        curve = []
        for step in range(1, steps + 1):
            idx = torch.randint(0, args.rows, (batch,), generator=draw)
            loss = train.soft_cross_entropy(head(h_tr[idx], f_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), t.max_grad_norm)
            opt.step()
            sched.step()
            if step in (1, 5, steps // 2 + 1, steps):
                curve.append(f"step {step}: {selection_log_loss():.4f}")
        print(f"head learning rate {lr:g}: selection log loss " + ", ".join(curve), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
