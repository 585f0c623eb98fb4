"""The arena family through the real CLI: the WSDM Cup's two-way task on its parquet sample, and the three-way task
with an arena-format extra source (lmsys/chatbot_arena_conversations' OpenAI messages) made from rows of the bench's
own sources. Each runs `arena train`, `cv`, `predict`, `score`, `package --no-wheels` and `kernel run-local`
in-process, as a user types them; every step's wall time, exit status and the lines it printed that say how it
went -> results["family"]."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import re
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from arena import cli, config, data, task
from arena.data.extra import FORMATS
from arena.embedded import is_embedded
from arena.errors import UserError
from arena.layout import SUBMISSION_FILE
from benchmarks.split import prompt_keys, source_name

WSDM = "wsdm-cup-multilingual-chatbot-arena"
EXTRA_FORMAT = next(f for f in FORMATS if f.source == "lmsys/chatbot_arena_conversations")
# A local base model reaches the kernel as a Kaggle model; the rehearsal mounts the local folder where Kaggle would.
LOCAL_BASE_SOURCE = "bench/base-model/transformers/default/1"
# The lines of a step's output that say how it went (an error always): step -> prefixes.
KEPT_LINES = {
    "train": ("extra data ", "data: ", "validation log loss"),
    "cv": ("OOF log loss", "OOF accuracy"),
    "predict": ("wrote ", "labels present"),
    "score": ("log_loss ",),
    "package": ("bundle: ",),
    "rehearsal": ("rehearsal passed", "NOT the Kaggle twin"),
}
INTERRUPTED = (130, 143)  # arena's exit statuses after Ctrl-C and SIGTERM
EXTRA_LINE = re.compile(r"^extra data .*: (\d+) rows in, (\d+) kept")


@dataclass(frozen=True)
class Sizes:
    """Rows of each file the stage makes. wsdm_*: the WSDM-form sample (`arena data sample`); arena_train and
    arena_extra: two disjoint slices of the bench's arena-like sources outside its held-out prompts (the second
    converted to the extra format); arena_test: rows of its main held-out set, predicted and scored; cv_folds:
    `arena cv --folds`. QUICK's three-way rows are enough that each CV fold trains on more rows than the head's
    start needs (its 5-fold logistic regression fails where every class has fewer than 5 rows)."""

    wsdm_train: int
    wsdm_test: int
    arena_train: int
    arena_extra: int
    arena_test: int
    cv_folds: int = 2


FULL = Sizes(wsdm_train=64, wsdm_test=24, arena_train=48, arena_extra=32, arena_test=24)
QUICK = Sizes(wsdm_train=24, wsdm_test=6, arena_train=16, arena_extra=16, arena_test=6)


class _Tee(io.TextIOBase):
    """A text stream that writes through to `stream` and keeps a copy."""

    def __init__(self, stream, kept: list[str]):
        self.stream, self.kept = stream, kept

    def write(self, s: str) -> int:
        self.stream.write(s)
        self.kept.append(s)
        return len(s)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()


def kept_lines(step: str, output: str) -> list[str]:
    """The lines of `output` that say how `step` went: its KEPT_LINES, and an error (`error:` and every problem
    after it, as the CLI prints them last)."""
    lines = [line.rstrip() for line in output.replace("\r", "\n").splitlines()]
    error = max((i for i, line in enumerate(lines) if line.startswith("error:")), default=len(lines))
    return [line for line in lines[:error] if line.startswith(KEPT_LINES[step])] + lines[error:]


def arena_33k(df: pd.DataFrame, judge: str) -> pd.DataFrame:
    """Competition-format rows in lmsys/chatbot_arena_conversations' form: each side an OpenAI message list (the
    prompt's turns as user messages, that side's as assistant messages), `winner` model_a / model_b / tie."""
    winners = np.asarray([task.WINNER_VALUES[c] for c in task.THREE_WAY.label_columns])

    def messages(prompt, responses):
        return [{"role": role, "content": text} for p, r in itertools.zip_longest(prompt, responses)
                for role, text in (("user", p), ("assistant", r))]

    out = pd.DataFrame({
        "question_id": df["id"].astype(str), **{c: df[c] if c in df.columns else None for c in ("model_a", "model_b")},
        "winner": winners[df["label"].to_numpy()], "judge": df["source"] if "source" in df.columns else judge,
        "conversation_a": [messages(p, a) for p, a in zip(df["prompt"], df["response_a"])],
        "conversation_b": [messages(p, b) for p, b in zip(df["prompt"], df["response_b"])],
        "turn": df["prompt"].map(len)})
    if "language" in df.columns:
        out["language"] = df["language"]
    return out


def _test_columns(df: pd.DataFrame, t: task.Task) -> pd.DataFrame:
    """A test file as the competition gives it: no labels, no model names."""
    return df.drop(columns=[c for c in [*t.label_columns, "winner", "model_a", "model_b"] if c in df.columns])


class Family:
    """Makes each task's files under <work>/family/<task>/ and runs its steps through `arena.cli.main`."""

    def __init__(self, work: Path, overrides: list[str], sizes: Sizes, seed: int, log):
        self.root, self.overrides, self.sizes, self.seed, self.log = work / "family", list(overrides), sizes, seed, log
        self.root.mkdir()
        cfg = config.load(None, self.overrides)
        # A local base model needs a Kaggle source for `arena package`; one is named only where the config has none.
        self.base_source = ([f"kaggle.base_model_source={LOCAL_BASE_SOURCE}"] if not is_embedded(cfg.model.path)
                            and not (cfg.kaggle.base_model_source or cfg.kaggle.base_model_dataset) else [])

    def cli(self, argv: list[str]) -> tuple[int, str]:
        """`arena ARGV` in this process: its exit status and everything it printed. A crash is reported as the
        process would exit with it (1, the traceback on stderr), not raised: the rest of the bench goes on."""
        kept: list[str] = []
        with contextlib.redirect_stdout(_Tee(sys.stdout, kept)), contextlib.redirect_stderr(_Tee(sys.stderr, kept)):
            try:
                code = cli.main(argv)
            except Exception as exc:  # noqa: BLE001 - report what failed instead of losing the whole benchmark
                traceback.print_exc()
                print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
                code = 1
        if code in INTERRUPTED:  # Ctrl-C or SIGTERM stops the bench, not only this step
            raise KeyboardInterrupt(f"arena {argv[0]}: interrupted (exit {code})")
        return code, "".join(kept)

    def make(self, argv: list[str]) -> None:
        """A file the steps read, written by the CLI; UserError if it fails (nothing to measure without it)."""
        code, output = self.cli(argv)
        if code != 0:
            raise UserError(f"arena {' '.join(argv)} failed (exit {code}): {output.strip()[-500:]}")

    def wsdm_files(self, folder: Path) -> dict:
        sets = ["--set", f"kaggle.competition={WSDM}"]
        t = task.COMPETITIONS[WSDM]
        s = self.sizes
        self.make(["data", "sample", "--rows", str(s.wsdm_train), "--seed", str(self.seed),
                   "--out", str(folder / t.train_file), *sets])
        self.make(["data", "sample", "--rows", str(s.wsdm_test), "--seed", str(self.seed + 1),
                   "--out", str(folder / f"labelled.{t.data_format}"), *sets])
        labelled = pd.read_parquet(folder / f"labelled.{t.data_format}")
        _test_columns(labelled, t).to_parquet(folder / t.test_file, index=False)
        return {"train_rows": s.wsdm_train, "test_rows": s.wsdm_test, "made_by": "arena data sample"}

    def arena_files(self, folder: Path, pool: pd.DataFrame, held_out: pd.DataFrame) -> dict:
        """The three-way task's files: a slice of `pool` to train on, the next slice as the extra source, and rows
        of the bench's main held-out set (`held_out`; none of them, nor their prompts, in `pool`) to predict and
        score."""
        t, s = task.THREE_WAY, self.sizes
        if len(pool) < s.arena_train + s.arena_extra:
            raise UserError(f"the bench's sources have {len(pool)} rows outside its held-out prompts; the family stage "
                            f"takes {s.arena_train} to train on and {s.arena_extra} more as its extra source")
        order = np.random.default_rng(self.seed).permutation(len(pool))
        train_rows, extra_rows = pool.iloc[order[:s.arena_train]], pool.iloc[order[s.arena_train:][:s.arena_extra]]
        data.write_csv(train_rows.reset_index(drop=True), folder / t.train_file)
        extra = folder / "extra-arena-conversations.parquet"
        arena_33k(extra_rows.reset_index(drop=True), judge="bench").to_parquet(extra, index=False)
        held = held_out.sample(n=min(s.arena_test, len(held_out)), random_state=self.seed).reset_index(drop=True)
        data.write_csv(held, folder / f"labelled.{t.data_format}")
        data.write_csv(held[["id", *data.TEXT_COLUMNS]], folder / t.test_file)
        return {"train_rows": len(train_rows), "extra_rows": len(extra_rows), "test_rows": len(held),
                "sources": sorted(pool["source"].unique()), "extra_file": str(extra),
                "extra_format": EXTRA_FORMAT.name, "extra_source": EXTRA_FORMAT.source}

    def run_task(self, name: str, competition: str | None, made: dict, folder: Path) -> dict:
        the_task = task.COMPETITIONS[competition] if competition else task.THREE_WAY
        extra = [made["extra_file"]] if "extra_file" in made else []
        own = [f"data.train={folder / the_task.train_file}", f"data.extra=[{', '.join(extra)}]",
               f"name=family-{name}", *self.base_source,
               *([f"kaggle.competition={competition}"] if competition else [])]
        sets = [a for o in [*self.overrides, *own] for a in ("--set", o)]
        runs, cv_runs = folder / "runs", folder / "cv"
        test, sub, bundle = folder / the_task.test_file, folder / "submission.csv", folder / "bundle"
        steps = []

        def step(label: str, argv: list[str], needs: str | None = None) -> dict:
            if needs and next(s for s in steps if s["step"] == needs)["exit"] != 0:
                rec = {"step": label, "command": "arena " + " ".join(argv), "exit": None, "wall_s": None,
                       "printed": [f"not run: {needs} failed"]}
            else:
                self.log(f"family {name}: arena {argv[0]}{' ' + argv[1] if argv[0] == 'kernel' else ''}")
                started = time.perf_counter()
                code, output = self.cli(argv)
                rec = {"step": label, "command": "arena " + " ".join(argv), "exit": code,
                       "wall_s": time.perf_counter() - started, "printed": kept_lines(label, output)}
                if code != 0:
                    self.log(f"family {name}: arena {argv[0]} FAILED (exit {code})")
            steps.append(rec)
            return rec

        step("train", ["train", *sets, "--set", f"train.runs_dir={runs}"])
        run = next(iter(sorted(runs.glob("*"))), runs)
        step("cv", ["cv", "--folds", str(self.sizes.cv_folds), *sets, "--set", f"train.runs_dir={cv_runs}"])
        step("predict", ["predict", "--run", str(run), "--data", str(test), "--out", str(sub)], needs="train")
        step("score", ["score", "--pred", str(sub), "--truth", str(folder / f"labelled.{the_task.data_format}")],
             needs="predict")
        step("package", ["package", "--run", str(run), "--no-wheels", "--out", str(bundle), "--test-csv", str(test)],
             needs="train")
        step("rehearsal", ["kernel", "run-local", str(bundle), "--input", str(folder), "--work",
                           str(folder / "kernel")], needs="package")
        out = {"id": name, "competition": competition or config.load(None, self.overrides).kaggle.competition,
               "task": the_task.describe, "overrides": own, "data": made, "steps": steps,
               "scores": scores(steps, runs, cv_runs, sub, folder, the_task)}
        lines = [line for line in steps[0]["printed"] if EXTRA_LINE.match(line)]
        if extra:
            rows_in, kept = map(int, EXTRA_LINE.match(lines[0]).groups()) if lines else (None, None)
            out["extra"] = {"line": lines[0] if lines else None, "rows_in": rows_in, "kept": kept,
                            "dropped": None if rows_in is None else rows_in - kept}
        return out


def scores(steps: list[dict], runs: Path, cv_runs: Path, sub: Path, folder: Path, the_task: task.Task) -> dict:
    """What each finished step wrote, read back: the run's validation scores, the CV's out-of-fold scores, the
    submission's form, the score of the submission, and how far the kernel's probabilities are from predict's."""
    ok = {s["step"] for s in steps if s["exit"] == 0}
    out = {"metric": the_task.metric}
    if "train" in ok:
        m = json.loads(next(runs.glob("*/metrics.json")).read_text())
        out["train"] = {k: m[k] for k in ("val_log_loss", "val_log_loss_tta", "val_accuracy", "val_accuracy_tta",
                                          "train_rows", "train_wall_seconds")}
    if "cv" in ok:
        cv = json.loads(next(cv_runs.glob("*/cv.json")).read_text())
        out["cv"] = {k: cv[k] for k in ("folds", "oof_rows", "oof_log_loss", "oof_accuracy")}
    if "predict" in ok:
        out["predict"] = {"columns": pd.read_csv(sub, nrows=0).columns.tolist(), "rows": len(pd.read_csv(sub))}
    if "score" in ok:
        result = data.score_files(sub, folder / f"labelled.{the_task.data_format}")
        out["score"] = {k: result[k] for k in ("log_loss", "accuracy", "rows")}
    if "rehearsal" in ok and "predict" in ok:
        kernel = folder / "kernel" / "kaggle" / "working" / SUBMISSION_FILE
        mine, theirs = _probabilities(sub, the_task), _probabilities(kernel, the_task)
        out["rehearsal"] = {"rows": len(theirs), "columns": pd.read_csv(kernel, nrows=0).columns.tolist(),
                            "max_prob_diff_vs_predict": float((theirs - mine.loc[theirs.index]).abs().max().max())}
    return out


def _probabilities(submission: Path, the_task: task.Task) -> pd.DataFrame:
    """A submission's probabilities by id: the file itself, or the one beside an `id,winner` submission."""
    path = submission if the_task.submission == "probabilities" else data.probabilities_path(submission)
    return pd.read_csv(path, dtype={"id": str}).set_index("id")[the_task.label_columns]


def arena_pool(frames: dict[str, pd.DataFrame], plan, split) -> pd.DataFrame:
    """The rows the three-way task may train on or convert: those of the bench's arena-like sources (its plan's
    main-evaluation files) whose prompt is held out nowhere, so no row of the bench's held-out sets, nor one sharing
    a prompt with them."""
    held = pd.concat([split.main_eval, *split.side_eval.values()], ignore_index=True)
    columns = ["id", "model_a", "model_b", *data.TEXT_COLUMNS, *task.THREE_WAY.label_columns, "label", "source"]
    rows = pd.concat([frames[sp.file].assign(source=source_name(sp.file)) for sp in plan.sources if sp.main_eval],
                     ignore_index=True)
    rows = rows[[c for c in columns if c in rows.columns]]
    return rows[~prompt_keys(rows).isin(set(prompt_keys(held))).to_numpy()].reset_index(drop=True)


def measure(work: Path, overrides: list[str], frames: dict[str, pd.DataFrame], plan, split, quick: bool, seed: int,
            log) -> dict:
    """Both tasks through every step. `overrides`: the bench's model and size settings (its plan's and --set);
    `frames`, `plan`, `split`: the bench's source files, its plan and its split of them."""
    sizes = QUICK if quick else FULL
    started = time.perf_counter()
    fam = Family(work, overrides, sizes, seed, log)
    tasks = []
    for name, competition in (("wsdm", WSDM), ("arena", None)):
        folder = fam.root / name
        folder.mkdir()
        made = (fam.wsdm_files(folder) if competition else
                fam.arena_files(folder, arena_pool(frames, plan, split), split.main_eval))
        tasks.append(fam.run_task(name, competition, made, folder))
    return {"sizes": asdict(sizes), "overrides": fam.overrides + fam.base_source, "tasks": tasks,
            "wall_seconds": time.perf_counter() - started}
