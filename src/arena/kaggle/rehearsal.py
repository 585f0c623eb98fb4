"""`arena kernel run-local`: a bundle's kernel run offline in a fake /kaggle layout (Kaggle's current mount layout
by default, the older one on request), in the Kaggle twin (twin.py: the image's package versions, this machine's
Python and CPU torch) into which the kernel installs the bundle's wheelhouse itself, optionally as several CPU
processes through the kernel's own `accelerate launch` line (as on T4x2), then its submission checked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from arena import budget, data, faults, hardware, task
from arena import config as config_mod
from arena.errors import UserError
from arena.kaggle import image as image_mod
from arena.kaggle import twin
from arena.kaggle.bundle import base_model_problems, bundle_config, kernel_base_model, needs_base_model
from arena.kaggle.kernel_predict import PORT_ENV, PROCESSES_ENV
from arena.kaggle.mounts import LAYOUTS, bundle_mounts, local_base
from arena.kaggle.pull import run_problems
from arena.kaggle.training import TrainingBundle, bundle_inputs, data_files
from arena.layout import SUBMISSION_FILE, Bundle, RunFolder
from arena.model import check_trained
from arena.processes import stop_tree
from arena.room import MIB
from arena.writes import free_bytes

ROOT_ENV = "ARENA_KAGGLE_ROOT"  # kernel.py's stand-in for /kaggle


def _kernel_python(work: Path, wheelhouse: Path) -> tuple[Path, Path | None, list[str]]:
    """The Kaggle twin (twin.py): a fresh venv over the cached image, nothing of this package or the wheelhouse in
    it (the kernel installs those from the bundle). Returns its python, the image's site-packages and what is in
    them (checked again after the kernel ran: the kernel's install must leave the cached image alone). A bundle
    without a wheelhouse cannot run on Kaggle: it runs in the mirror of this machine's packages, said so."""
    if not twin.has_wheelhouse(wheelhouse):
        print(f"NOT the Kaggle twin: {wheelhouse} holds only the arena wheel (--no-wheels), which would not run on "
              f"Kaggle's image (its transformers {image_mod.preinstalled('transformers')}, peft "
              f"{image_mod.preinstalled('peft')}); rehearsing with this machine's packages instead", flush=True)
        return twin.mirror_python(work, wheelhouse), None, []
    python, image = twin.kernel_python(work)
    print("the Kaggle twin: " + image_mod.IMAGE["name"] + f" at {image}; substitutions:\n  "
          + "\n  ".join(twin.substitutions()), flush=True)
    return python, image, twin.fingerprint(image)


def twin_problems(wheelhouse: Path) -> list[str]:
    """Why the Kaggle twin a bundle with a wheelhouse runs in cannot be built here (a read-only cache), before any
    work."""
    return twin.build_problems() if twin.has_wheelhouse(wheelhouse) else []


def _check_image_untouched(image: Path | None, before: list[str]) -> None:
    if image is not None and twin.fingerprint(image) != before:
        raise UserError(f"the kernel changed the cached Kaggle twin {image} (pip must install into the rehearsal's "
                        f"venv only): remove that folder, it is rebuilt at the next rehearsal")


# Besides the wheelhouse the kernel installs (unpacked, about three times its size): logs, the submission, a venv.
WORK_ROOM_BYTES = 64 * MIB


def work_room_problems(work_dir, wheelhouse: Path) -> list[str]:
    """Room on the disk of --work (or the temporary folder) for the kernel's install and outputs, before any work."""
    where = Path(work_dir) if work_dir is not None else Path(tempfile.gettempdir())
    need = 3 * sum(p.stat().st_size for p in wheelhouse.glob("*") if p.is_file()) + WORK_ROOM_BYTES
    free = free_bytes(where)
    if free >= need:
        return []
    return [f"--work {where}: {free / MIB:.0f} MiB free on its disk; the rehearsal needs about {need / MIB:.0f} MiB "
            f"(the kernel installs the {wheelhouse.name} there): free some room, or give --work on another disk"]


def _disk_note(work: Path, log: Path) -> str:
    """Why a kernel failed when it was the disk of --work that filled up."""
    full = "No space left on device" in log.read_text(encoding="utf-8", errors="replace") if log.is_file() else False
    if not full and free_bytes(work) >= MIB:
        return ""
    return f": the disk of --work {work} filled up ({free_bytes(work) / MIB:.0f} MiB free now)"


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target.resolve(), target_is_directory=target.is_dir())


def find_competition_file(input_dir: Path, competition: str, name: str) -> Path | None:
    """The competition's file `name` (the task's test or train file) as given, in the folder, or <competition>/<name>."""
    for candidate in (input_dir, input_dir / name, input_dir / competition / name):
        if candidate.is_file() and candidate.name == name:
            return candidate
    return None


RENDEZVOUS_HOST = "127.0.0.1"  # where the kernel's processes meet: accelerate launch's main process address


def machine_note(bundle: Bundle) -> str:
    """One line: the Kaggle machine the bundle is built for, what this rehearsal acts as, and that the kernel's GPU
    check (which stops it on Kaggle on any other machine) is skipped here."""
    shape = json.loads(bundle.kernel_metadata.read_text(encoding="utf-8")).get("machine_shape")
    built = next((p for p in hardware.PROFILES.values() if shape and p.machine_shape == shape), None)
    made = (f"Kaggle's {built.gpus} x {built.gpu_name} (machine_shape {shape})" if built
            else f"machine_shape {shape or 'unset (one P100)'}")
    return (f"note: the bundle is built for {made}; this rehearsal acts as {hardware.current().describe()}, and "
            f"the kernel's GPU check, which stops it on any other machine on Kaggle, is skipped here")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((RENDEZVOUS_HOST, 0))
        return s.getsockname()[1]


def rendezvous_problems(processes: int, timeout_s: float = 5.0) -> list[str]:
    """Whether several kernel processes can meet: torch.distributed's store listens on RENDEZVOUS_HOST and each
    process connects to it. With the loopback interface down the connection fails and the store retries for 900 s,
    then prints pages of C++ frames; checked here with a socket of our own, before any work."""
    import socket

    if processes < 2:
        return []
    try:
        with socket.socket() as server, socket.socket() as client:
            server.bind((RENDEZVOUS_HOST, 0))
            server.listen(1)
            client.settimeout(timeout_s)
            client.connect(server.getsockname())
    except OSError as exc:
        return [f"the kernel's {processes} processes meet over TCP at {RENDEZVOUS_HOST} (torch.distributed's "
                f"rendezvous), and this machine cannot connect to itself there ({exc.strerror or exc}): bring the "
                f"loopback interface up, or rehearse one process (--processes 1)"]
    return []


def run_local(bundle_dir, input_dir, work_dir=None, layout: str = "current", processes: int = 1,
              previous_output=None, base_model=None, fault: str | None = None) -> Path:
    """`arena kernel run-local`: run the bundle's kernel.py offline in a fake /kaggle (Kaggle's current mount
    layout, or "old"), as `processes` CPU processes through the kernel's accelerate launch line when > 1, and
    check its submission (a training bundle: see run_local_training). `base_model`: the base model folder to
    mount, when the run's model.path has moved since training. `fault`: one of arena.faults.FAULTS, injected in
    the kernel's processes (a rank fault needs several)."""
    if TrainingBundle(bundle_dir).is_training_bundle():
        return run_local_training(bundle_dir, input_dir, work_dir, previous_output, fault, processes)
    if previous_output is not None:
        raise UserError(f"--previous-output: only for a training bundle (from `arena kaggle train`), not {bundle_dir}")
    bundle = Bundle(bundle_dir)
    cfg = bundle_config(bundle)
    members = [(run, config_mod.load_run(run)) for run in bundle.member_runs()]  # an ensemble's, else the run
    problems = []
    members = [(run, member_cfg, needs_base_model(member_cfg, run.is_merged())) for run, member_cfg in members]
    for run, member_cfg, needs_base in members:
        problems += check_trained(run) + base_model_problems(member_cfg, run.is_merged())
        base = local_base(member_cfg, base_model)
        if needs_base and not (base / "config.json").is_file():
            problems.append(f"{'--base-model' if base_model else 'model.path'} {base}: base model folder not found "
                            f"here, so the rehearsal cannot attach it (--base-model DIR: where it is now)")
    attached = {}
    for _, member_cfg, needs_base in members:
        if needs_base:
            kernel_path, base = kernel_base_model(member_cfg), local_base(member_cfg, base_model)
            if attached.setdefault(kernel_path, base).resolve() != base.resolve():
                problems.append(f"base model {kernel_path}: two members attach different base models there "
                                f"({attached[kernel_path]} and {base})")
    the_task = task.of_config(cfg)
    test_name = the_task.test_file  # the kernel's TEST_FILE
    test_file = find_competition_file(Path(input_dir), cfg.kaggle.competition, test_name)
    if test_file is None:
        problems.append(f"--input {input_dir}: no {test_name} there, nor in {input_dir}/{cfg.kaggle.competition}/ "
                        f"(a Kaggle-style input root)")
    if work_dir is not None and Path(work_dir).exists() and (not Path(work_dir).is_dir() or any(Path(work_dir).iterdir())):
        problems.append(f"--work {work_dir}: not an empty folder; the rehearsal needs a fresh one")
    problems += work_room_problems(work_dir, bundle.wheels) + twin_problems(bundle.wheels)
    if layout not in LAYOUTS:
        problems.append(f"--layout {layout}: one of {', '.join(LAYOUTS)}")
    if processes < 1:
        problems.append(f"--processes {processes}: at least 1")
    problems += fault_problems(fault, processes) + rendezvous_problems(processes)
    if problems:
        raise UserError(problems=problems)
    expected_ids = data.load_test(test_file)["id"]  # as the kernel reads it
    # absolute: the kernel and its venv's python run from the fake /kaggle/working, not from here
    work = Path(work_dir).resolve() if work_dir else Path(tempfile.mkdtemp(prefix="arena-kernel-"))
    work.mkdir(parents=True, exist_ok=True)

    root = work / "kaggle"
    inputs = root / "input"
    for rel, target in bundle_mounts(bundle, cfg, members, layout, base_model).items():
        if target is None:  # the competition: only its test file
            _link(inputs / rel / test_name, test_file)
        elif not (inputs / rel).exists():  # members may share a base model (checked above to be the same one)
            _link(inputs / rel, target)
    (root / "working").mkdir(parents=True)

    print(machine_note(bundle), flush=True)
    extra = {"ARENA_SKIP_GPU_CHECK": "1"}  # this machine is not the Kaggle one the bundle is built for
    if processes > 1:  # the kernel's T4x2 launch line, on CPU: torch.distributed over gloo
        extra.update({PROCESSES_ENV: str(processes), PORT_ENV: str(_free_port()), **cpu_processes(processes)})
    if fault:
        extra[faults.FAULT_ENV] = fault
    code, python, env = _run_kernel(
        bundle.kernel_script, root, work, bundle.wheels, extra,
        f"{layout} mount layout, {processes} process{'es' if processes > 1 else ''}"
        + (f", fault {fault}: {faults.FAULTS[faults.parse(fault, '--fault').name]}" if fault else ""))
    log = work / "kernel.log"
    if code != 0:
        raise UserError(f"the kernel failed (exit {code}){_disk_note(work, log)}; full log: {log}")

    where = subprocess.run([str(python), "-c", "import arena; print(arena.__file__)"], env=env,
                           cwd=root / "working", stdout=subprocess.PIPE, text=True).stdout.strip()
    if not Path(where).resolve().is_relative_to((work / "venv").resolve()):
        raise UserError(f"the rehearsal ran arena from {where}, not from the bundle's wheel")
    submission = root / "working" / SUBMISSION_FILE
    if not submission.is_file():
        raise UserError(f"the kernel exited 0 but wrote no {submission}")
    data.read_columns(submission, "submission", the_task.submission_columns)  # the form Kaggle takes: id,winner or
    # a column per class; a winner file is checked through the probabilities arena predict wrote beside it
    data.validate_submission(data.read_probabilities(submission, "submission", task=the_task)[0], expected_ids)
    print(f"rehearsal passed: {submission} ({len(expected_ids)} rows, valid)")
    return submission


# ---- training bundles (`arena kaggle train`) ------------------------------------------------------------


def run_local_training(bundle_dir, input_dir, work_dir=None, previous_output=None, fault: str | None = None,
                       processes: int = 1) -> Path:
    """A training bundle's kernel run offline in a fake /kaggle: the data and wheels datasets, the competition's
    train file from `input_dir` when the kernel reads it there, the base model, and (`previous_output`: an earlier
    rehearsal's working folder) the previous version's output. Returns this version's working folder (its
    output), holding the run folder: finished, or stopped for time with a whole checkpoint."""
    bundle = TrainingBundle(bundle_dir)
    cfg, meta = bundle_inputs(bundle)
    k = cfg.kaggle
    problems = base_model_problems(cfg)
    base = Path(cfg.model.path).expanduser()
    if needs_base_model(cfg) and not (base / "config.json").is_file():
        problems.append(f"model.path {base}: base model folder not found here, so the rehearsal cannot attach it")
    train_name = task.of_config(cfg).train_file
    reads_competition = data_files(cfg)[0]["TRAIN"] == f"competition:{train_name}"
    train_file = find_competition_file(Path(input_dir), k.competition, train_name)
    if reads_competition and train_file is None:
        problems.append(f"--input {input_dir}: no {train_name} there, nor in {input_dir}/{k.competition}/ (the kernel "
                        f"reads the competition's {train_name})")
    attaches_previous = bool(meta.get("kernel_sources"))
    if previous_output is not None and not attaches_previous:
        problems.append(f"--previous-output {previous_output}: the bundle attaches no previous version (build it "
                        f"with `arena kaggle train --resume`)")
    if previous_output is not None and not (Path(previous_output) / "runs").is_dir():
        problems.append(f"--previous-output {previous_output}: no runs/ folder there (a rehearsal's working folder)")
    if work_dir is not None and Path(work_dir).exists() and (not Path(work_dir).is_dir() or any(Path(work_dir).iterdir())):
        problems.append(f"--work {work_dir}: not an empty folder; the rehearsal needs a fresh one")
    problems += work_room_problems(work_dir, bundle.wheels) + twin_problems(bundle.wheels)
    problems += fault_problems(fault, processes) + rendezvous_problems(processes)
    if problems:
        raise UserError(problems=problems)
    work = Path(work_dir).resolve() if work_dir else Path(tempfile.mkdtemp(prefix="arena-train-kernel-"))
    work.mkdir(parents=True, exist_ok=True)
    root = work / "kaggle"
    inputs = root / "input"
    owner = meta["id"].split("/")[0]
    if train_file is not None:  # Kaggle's current mount layout
        _link(inputs / image_mod.MOUNTS["competition"][0].format(slug=k.competition) / train_name, train_file)
    _link(inputs / "datasets" / owner / k.train_data_dataset_slug, bundle.data)
    _link(inputs / "datasets" / owner / k.wheels_dataset_slug, bundle.wheels)
    if previous_output is not None and attaches_previous:  # the kernel looks for it under any folder of this name
        _link(inputs / k.train_kernel_slug, Path(previous_output))
    if needs_base_model(cfg):
        spec = kernel_base_model(cfg)
        rel = Path(spec).relative_to("/kaggle") if spec.startswith("/kaggle/") else Path("input") / spec.lstrip("/")
        _link(root / rel, base)
    working = root / "working"
    working.mkdir(parents=True)
    extra = {PROCESSES_ENV: str(processes), PORT_ENV: str(_free_port()), **cpu_processes(processes)} \
        if processes > 1 else {}
    if fault:
        extra[faults.FAULT_ENV] = fault

    def finish_began() -> bool:  # the run saved its adapter and is evaluating: the worst moment for the limit
        return any(RunFolder(p).adapter.is_dir() and not RunFolder(p).is_finished() for p in working.glob("runs/*"))

    code, _, _ = _run_kernel(bundle.kernel_script, root, work, bundle.wheels, extra,
                             f"current mount layout, {processes} process{'es' if processes > 1 else ''}"
                             + (f", fault {fault}" if fault else ""),
                             session_ends=finish_began if fault == "session-limit" else None)
    killed = fault == "session-limit" and code == -signal.SIGKILL
    if code != 0 and not killed:
        raise UserError(f"the training kernel failed (exit {code}){_disk_note(work, work / 'kernel.log')}; full log: "
                        f"{work / 'kernel.log'}")
    runs = [p for p in (working / "runs").glob("*") if (p / "config.yaml").is_file()]
    if len(runs) != 1:
        raise UserError(f"the training kernel {'was killed' if killed else 'exited 0'} but left {len(runs)} run "
                        f"folders in {working / 'runs'}")
    run = RunFolder(runs[0])
    problems = run_problems(run)
    if problems:
        raise UserError(problems=problems)
    next_version = (f"rehearse the next version (a bundle from `arena kaggle train --resume`) with --previous-output "
                    f"{working}")
    if run.is_finished():
        print(f"rehearsal passed: training finished in {run.root}; this version's output: {working}")
    elif killed:
        print(f"rehearsal passed: the session ended during the run's finish (--fault session-limit), its output "
              f"keeps the run and its last whole checkpoint; {next_version}")
    elif fault and faults.parse(fault, "--fault").name in faults.RANK_FAULTS:
        print(f"rehearsal passed: training failed (--fault {fault}) and the output keeps the run with a whole "
              f"checkpoint; {next_version}")
    else:
        stop = budget.recorded_stops(run.root)[-1]
        print(f"rehearsal passed: stopped for time after step {stop['step']} of {stop['max_steps']} with a whole "
              f"{stop['checkpoint']}; {next_version}")
    return working


def _run_kernel(script: Path, root: Path, work: Path, wheelhouse: Path, extra_env: dict | None = None,
                what: str = "current mount layout", session_ends=None) -> tuple[int, Path, dict]:
    """Run a kernel script offline in the Kaggle twin, its output streamed and kept in work/kernel.log; returns its
    exit code, the twin's python and the kernel's environment. The kernel runs in a session of its own, stopped
    with every process under it when the rehearsal stops (Ctrl-C, SIGTERM): no pip install or prediction rank goes
    on after it (processes.stop_tree); and killed, as a session's time limit kills it, as soon as `session_ends()`
    says so."""
    python, image, before = _kernel_python(work, wheelhouse)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update({ROOT_ENV: str(root), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull, "PYTHONNOUSERSITE": "1"})
    env.pop(PROCESSES_ENV, None)
    env.pop(faults.FAULT_ENV, None)
    env.update(extra_env or {})
    log = work / "kernel.log"
    print(f"rehearsing {script} in {root} ({what}, offline; log: {log})", flush=True)
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen([str(python), str(script.resolve())], cwd=root / "working", env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        if session_ends is not None:
            threading.Thread(target=_end_session, args=(proc, session_ends), daemon=True).start()
        try:
            for line in proc.stdout:
                print(line, end="", flush=True)
                out.write(line)
            code = proc.wait()
        finally:
            if proc.poll() is None:
                stop_tree(proc)
    _check_image_untouched(image, before)
    return code, python, env


def _end_session(proc: subprocess.Popen, session_ends, poll_s: float = 0.05) -> None:
    while proc.poll() is None:
        if session_ends():
            print("rehearsal: the session's time limit: the kernel and every process it started are killed now "
                  "(--fault session-limit)", flush=True)
            stop_tree(proc, grace_s=0)
            return
        time.sleep(poll_s)


def fault_problems(fault: str | None, processes: int) -> list[str]:
    """--fault names a fault arena injects, and a rank fault has several processes to strike one of."""
    if fault is None:
        return []
    try:
        parsed = faults.parse(fault, "--fault")
    except UserError as exc:
        return exc.problems
    if parsed.name in faults.RANK_FAULTS and processes < 2:
        return [f"--fault {fault}: strikes one of several processes, and this rehearsal runs one (give --hardware "
                f"t4x2 or --processes 2)"]
    if parsed.rank is not None and parsed.rank >= processes:
        return [f"--fault {fault}: there is no process {parsed.rank} among {processes}"]
    return []


def cpu_processes(processes: int) -> dict:
    """The kernel's environment for `processes` processes, one per GPU: on a machine with fewer GPUs than that
    (a one-GPU machine rehearsing T4x2), CUDA is hidden from the kernel and the profile's processes run on the CPU,
    as on a machine without CUDA; said in one line."""
    gpus = hardware.visible_gpus()
    if gpus == 0 or gpus >= processes:
        return {}
    print(f"this machine has {gpus} GPU(s) for the kernel's {processes} processes (one per GPU): the rehearsal runs "
          f"them on the CPU, CUDA hidden from the kernel (CUDA_VISIBLE_DEVICES=''), the profile's decisions simulated",
          flush=True)
    return {"CUDA_VISIBLE_DEVICES": ""}
