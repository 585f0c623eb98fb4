"""`arena push` and `arena runs --fetch-lb` through the real kaggle CLI of requirements.txt, talking to a fake
Kaggle on loopback (tests/fake_kaggle.py) that answers with kagglesdk's own types: every way Kaggle can fail
that the CLI hides behind exit 0, and the whole push -> wait -> submit -> fetch-lb cycle."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from arena import cli, config
from arena.errors import UserError
from arena.kaggle import credentials, remote
from arena.layout import Bundle, RunFolder
from tests.fake_kaggle import (
    DatasetVersion,
    FakeDataset,
    KernelVersion,
    fake_kaggle_fixture,  # noqa: F401 (the fake_kaggle fixture)
    push_id_of,
    run_like_arena_kernel,
)
from tests.kaggle_bundles import fake_bundle, kaggle_cfg

GEMMA = "google/gemma-2/transformers/gemma-2-9b-it/2"


LIVE = "llm-classification-finetuning"  # open: the default kaggle.competition
LMSYS = "lmsys-chatbot-arena"  # closed (late submissions are still scored): one setting away
WSDM = "wsdm-cup-multilingual-chatbot-arena"  # two-way, parquet files


def _run_and_bundle(tmp_path: Path, tiny_run: Path, **kaggle) -> tuple[Path, Path]:
    run = tmp_path / "runs" / "t-20260101-000000"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("config.yaml", "predictions", "kaggle-bundle-*"))
    cfg = kaggle_cfg(base_model_source=GEMMA, **kaggle)
    config.dump(cfg, run / "config.yaml")
    return run, fake_bundle(tmp_path, cfg, adapter=RunFolder(tiny_run).adapter)


@pytest.fixture
def run_and_bundle(tmp_path, tiny_run):
    """A run folder under runs/ (so that `arena runs` lists it) and a bundle of it attaching GEMMA."""
    return _run_and_bundle(tmp_path, tiny_run)


def _push(run: Path, bundle: Path, *extra: str) -> int:
    return cli.main(["push", "--run", str(run), "--bundle", str(bundle), "--message", "try", *extra])


def _everything(capsys) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


# A run of the default recipe goes to the live competition; LMSYS's by setting kaggle.competition. The closed
# competition's board is its private score; the open one shows only the public score.
@pytest.mark.parametrize("setting, competition, private, score", [(None, LIVE, None, 0.9511),
                                                                   (LMSYS, LMSYS, "0.94020", 0.9402)])
def test_push_wait_submit_fetch_lb_cycle(fake_kaggle, tmp_path, tiny_run, capsys, setting, competition, private,
                                         score):
    run, bundle = _run_and_bundle(tmp_path, tiny_run, **({"competition": setting} if setting else {}))
    fake = fake_kaggle
    fake.models[GEMMA] = "ok"
    for slug in ("arena-adapter", "arena-wheels"):  # pushed before: this push makes version 2
        fake.datasets[f"alice/{slug}"] = FakeDataset(f"alice/{slug}", [DatasetVersion(1, "ready", [])])
    previous = fake.kernel("arena-inference")
    previous.versions.append(KernelVersion(1, "old", {}, status="complete", outputs={"arena-push.txt": b"old\n"}))
    fake.stale_status_polls = 2  # right after the push, `kernels status` of the kernel still shows version 1 complete
    fake.unseen_version_polls = 2  # and that of version 2 is not found yet
    fake.processing_polls = 2
    fake.on_kernel_push = run_like_arena_kernel(fake)

    assert _push(run, bundle) == 0
    out = _everything(capsys)
    assert fake.called("CreateDatasetVersion") and not fake.called("CreateDataset")
    pushed = fake.kernels["arena-inference"].versions[-1]
    assert pushed.number == 2
    assert pushed.metadata["datasetDataSources"] == ["alice/arena-adapter/2", "alice/arena-wheels/2"]
    assert pushed.metadata["modelDataSources"] == [GEMMA] and pushed.metadata["dockerImagePinningType"] == "latest"
    assert pushed.metadata["competitionDataSources"] == [competition]
    # the pushed version's own status and output, never the latest session's
    assert {c.get("versionLabel") for c in fake.called("GetKernelSessionStatus")} == {"v2"}
    assert [c.get("versionLabel") for c in fake.called("ListKernelSessionOutput")] == ["v2"]
    assert "does not know version 2" not in out and "version 2 completed, but" not in out
    [submit] = fake.called("CreateCodeSubmission")
    assert submit["kernelVersion"] == 2 and submit["kernelSlug"] == "arena-inference"
    assert submit["competitionName"] == competition and f"Successfully submitted to {fake.competitions[competition]}" in out
    assert submit["submissionDescription"] == f"try [arena run {run.name}]"
    record = json.loads((run / "kaggle" / "arena-inference-v2" / "submitted.json").read_text())
    assert record["version"] == 2 and record["datasets"] == {"arena-adapter": 2, "arena-wheels": 2}
    assert record["ref"] == fake.submissions[0].ref and f"Submission ref: {record['ref']}" in out
    assert (run / "kaggle" / "arena-inference-v2" / "submission.csv").is_file()

    # Kaggle scores it; a later one errors in the rerun; one more is still pending; the same run submitted to the
    # other competition is not this one's.
    assert fake.competition_of(submit_ref := fake.submissions[0].ref) == competition
    fake.score_submission(submit_ref, public="0.95110", private=private)
    later = fake.add_submission(submit["submissionDescription"], competition)
    fake.score_submission(later.ref, error="Notebook Timeout: exceeded 9 hours")
    fake.add_submission(submit["submissionDescription"], competition)  # still pending: nothing to record yet
    other = LMSYS if competition == LIVE else LIVE
    fake.score_submission(fake.add_submission(submit["submissionDescription"], other).ref, public="0.99")
    # the default recipe names the live competition; the closed one is named by the run's recipe
    recipe = [] if setting is None else ["--config", str(run / "config.yaml")]
    assert cli.main(["runs", "--runs-dir", str(run.parent), "--fetch-lb", "--format", "csv", *recipe]) == 0
    out += _everything(capsys)
    assert [c["competitionName"] for c in fake.called("ListSubmissions")] == [competition, competition]
    board = json.loads(RunFolder(run).leaderboard.read_text())["scores"]
    assert [(s["ref"], s["score"], s["status"]) for s in board] == [(str(submit_ref), score, "complete"),
                                                                    (str(submit_ref + 1), None, "error")]
    assert board[0]["public"] == 0.9511 and board[1]["error"] == "Notebook Timeout: exceeded 9 hours"
    assert "recorded ERROR for t-20260101-000000" in out
    table = out[out.index("run,kind"):]
    assert f"{score:.4f}" in table and "Notebook Timeout: exceeded 9 hours" in table
    assert fake.legacy_key not in out  # the key is never printed


def test_dataset_creation_error_printed_with_exit_0_stops_push(fake_kaggle, run_and_bundle, capsys):
    run, bundle = run_and_bundle
    fake_kaggle.models[GEMMA] = "ok"
    fake_kaggle.dataset_create_error = "The requested title is already in use by a dataset."
    folder = Bundle(bundle).adapter_dataset
    direct = subprocess.run([remote.kaggle_executable(), "datasets", "create", "-p", str(folder)], capture_output=True,
                            text=True)
    assert direct.returncode == 0 and "Dataset creation error" in direct.stdout  # the CLI hides it behind exit 0
    assert _push(run, bundle) == 2
    err = capsys.readouterr().err
    assert "`kaggle datasets create` failed" in err and "already in use" in err
    assert not fake_kaggle.called("SaveKernel")


def test_dataset_version_whose_processing_fails_stops_push(fake_kaggle, run_and_bundle, capsys):
    run, bundle = run_and_bundle
    fake_kaggle.models[GEMMA] = "ok"
    fake_kaggle.dataset_processing = "failed"
    assert _push(run, bundle) == 2
    err = capsys.readouterr().err
    assert "alice/arena-adapter: Kaggle reports the processing of version 1 failed" in err
    assert not fake_kaggle.called("SaveKernel") and not fake_kaggle.called("CreateCodeSubmission")


def test_kernel_error_downloads_its_log_and_prints_its_tail(fake_kaggle, run_and_bundle, capsys):
    run, bundle = run_and_bundle
    fake = fake_kaggle
    fake.models[GEMMA] = "ok"
    log = json.dumps([{"stream_name": "stdout", "time": 1.0, "data": "kernel: $ python -m arena.cli predict\n"},
                      {"stream_name": "stderr", "time": 2.0, "data": "torch.OutOfMemoryError: CUDA out of memory\n"}])

    def fail_as_this_push(kernel, version):
        fake.fail_kernel(kernel.slug, log=log, message="Your notebook tried to allocate more memory",
                         output_files={"arena-push.txt": push_id_of(version.script) + "\n"})

    fake.on_kernel_push = fail_as_this_push
    assert _push(run, bundle) == 2
    err = capsys.readouterr().err
    assert "version 1 ended with status error: Your notebook tried to allocate more memory" in err
    assert "torch.OutOfMemoryError: CUDA out of memory" in err  # the log's tail
    assert (run / "kaggle" / "arena-inference-v1" / "arena-inference.log").read_text() == log
    assert not fake.called("CreateCodeSubmission")


@pytest.mark.parametrize("state, expected", [
    ("not-consented", "Accept the model's terms on its page, https://www.kaggle.com/models/google/gemma-2"),
    (None, f"model source {GEMMA}: not found on Kaggle"),
])
def test_model_source_without_access_stops_push_before_any_upload(fake_kaggle, run_and_bundle, capsys, state,
                                                                  expected):
    run, bundle = run_and_bundle
    if state:
        fake_kaggle.models[GEMMA] = state
    assert _push(run, bundle) == 2
    assert expected in capsys.readouterr().err
    assert not fake_kaggle.called("CreateDataset") and not fake_kaggle.called("StartBlobUpload")


def test_invalid_source_reported_by_kernels_push_stops_push(fake_kaggle, run_and_bundle, capsys):
    run, bundle = run_and_bundle
    fake_kaggle.models[GEMMA] = "ok"
    fake_kaggle.invalid_sources = {"competition": [LIVE]}
    fake_kaggle.on_kernel_push = run_like_arena_kernel(fake_kaggle)
    assert _push(run, bundle) == 2
    assert "not valid competition sources" in capsys.readouterr().err
    assert not fake_kaggle.called("GetKernelSessionStatus") and not fake_kaggle.called("CreateCodeSubmission")


@pytest.mark.parametrize("how", ["HTTP 400", "answered without a submission ref"])
def test_a_refused_submission_is_an_error_and_not_recorded(fake_kaggle, run_and_bundle, capsys, how):
    run, bundle = run_and_bundle
    fake_kaggle.models[GEMMA] = "ok"
    fake_kaggle.on_kernel_push = run_like_arena_kernel(fake_kaggle)
    if how == "HTTP 400":
        fake_kaggle.submission_rejection = "You have reached the daily submission limit"
    else:  # the CLI still prints "N submissions remaining today." and exits 0
        fake_kaggle.submission_refusal = "You have reached the daily submission limit"
    assert _push(run, bundle) == 2
    captured = capsys.readouterr()
    assert "daily submission limit" in captured.out + captured.err
    if how != "HTTP 400":
        assert "submissions remaining today" in captured.out and "Submission ref" not in captured.out
        assert "`kaggle competitions submit` exited 0 without confirming success" in captured.err
    assert not list(run.glob("kaggle/*/submitted.json")) and not fake_kaggle.submissions


def test_kaggle_down_is_a_clear_error_and_nothing_is_recorded(fake_kaggle, run_and_bundle, capsys):
    run, bundle = run_and_bundle
    fake_kaggle.stop()  # connection refused
    assert _push(run, bundle) == 2
    err = capsys.readouterr().err
    assert "could not reach Kaggle (a connection error" in err
    assert "terms" not in err  # not taken for a model whose terms are not accepted
    assert not (run / "kaggle").exists()


def test_a_bundle_packaged_from_another_run_is_refused_before_any_kaggle_call(fake_kaggle, run_and_bundle, capsys):
    """`push --run A --bundle <bundle of D>` submitted D's adapter under A's name (and --fetch-lb credited A)."""
    run, bundle = run_and_bundle
    other = run.with_name("other-20260101-000000")
    shutil.copytree(run, other)
    head = json.loads((other / "adapter" / "head.json").read_text())
    (other / "adapter" / "head.json").write_text(json.dumps({**head, "class_prior": [0.5, 0.3, 0.2]}))
    for flags in ((), ("--dry-run",)):
        assert _push(other, bundle, *flags) == 2
        assert "was not packaged from --run" in capsys.readouterr().err
    assert fake_kaggle.calls == []


def test_push_waits_for_its_own_version_whatever_the_latest_session_is(fake_kaggle, tmp_path, capsys):
    """A later push's session is the kernel's latest (it errored, with another push id): the wait reads the version
    this push made, which completes with this push's output."""
    from arena.kaggle import push

    kernel = fake_kaggle.kernel("arena-inference")
    kernel.versions.append(KernelVersion(1, "", {}, status="complete", outputs={"arena-push.txt": b"ours\n",
                                                                                "submission.csv": b"id\n"}))
    kernel.versions.append(KernelVersion(2, "", {}, status="error", outputs={"arena-push.txt": b"theirs\n"}))
    folder = push.wait_kernel("alice/arena-inference", "1", "ours", tmp_path / "v1", hours=1)
    assert (folder / "submission.csv").read_text() == "id\n"
    assert [c.get("versionLabel") for c in fake_kaggle.called("GetKernelSessionStatus")] == ["v1"]
    fake_kaggle.unseen_version_polls = 100  # a version Kaggle never lists: the wait stops
    kernel.versions.append(KernelVersion(3, "", {}))
    kernel.polls_since_push = 0
    with pytest.raises(UserError, match="Kaggle does not know version 3 of alice/arena-inference \\(5 polls"):
        push.wait_kernel("alice/arena-inference", "3", "ours", tmp_path / "v3", hours=1)
    assert len(fake_kaggle.called("GetKernelSessionStatus")) == 1 + 5


def test_a_push_replaced_by_another_push_stops_instead_of_waiting_until_killed(fake_kaggle, run_and_bundle, capsys):
    """Two pushes at once, the datasets and the kernel already on Kaggle: the other push's version follows this
    one's, which never ends (its session was taken over); this push stops, saying so, and submits nothing."""
    run, bundle = run_and_bundle
    fake_kaggle.models[GEMMA] = "ok"
    fake_kaggle.on_kernel_push = run_like_arena_kernel(fake_kaggle)
    assert _push(run, bundle) == 0  # a first push: the datasets and the kernel are on Kaggle now

    def another_push_follows(kernel, version):
        kernel.versions.append(KernelVersion(version.number + 1, "theirs", {}, status="running"))

    fake_kaggle.on_kernel_push = another_push_follows
    capsys.readouterr()
    assert _push(run, bundle) == 2
    err = capsys.readouterr().err
    assert "another push of alice/arena-inference made version 3 while this push waited on version 2" in err
    assert len(fake_kaggle.called("CreateCodeSubmission")) == 1  # the first push's alone


def test_a_kaggle_cli_of_another_version_is_refused_before_anything_is_sent(fake_kaggle, tmp_path, monkeypatch):
    assert remote.require_cli_version(remote.kaggle_executable()) == "2.2.5"  # requirements.txt's
    old = tmp_path / "kaggle"
    old.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo 'Kaggle CLI 2.2.4' && exit 0\necho sent >> \"$0.log\"\n")
    old.chmod(0o755)
    monkeypatch.setattr(remote, "kaggle_executable", lambda: str(old))
    with pytest.raises(UserError, match=f"the kaggle CLI at {old} is 2.2.4 .*arena reads the output of kaggle 2.2.5"):
        remote.run_kaggle(["kernels", "status", "alice/arena-inference/1"])
    assert not Path(f"{old}.log").exists() and fake_kaggle.calls == []


# ---- credentials: every way the CLI authenticates ----------------------------------------------------

def _oauth_login(home: Path, token: str) -> None:
    (home / ".kaggle").mkdir(exist_ok=True)
    (home / ".kaggle" / "credentials.json").write_text(json.dumps({
        "refresh_token": "refresh-secret-1234", "access_token": token,
        "access_token_expiration": "2999-01-01T00:00:00+00:00", "username": "alice", "scopes": []}))


@pytest.mark.parametrize("kind", ["kaggle.json", "env key", "env token", "token file path", "access_token file",
                                  "stored login"])
def test_every_credential_the_cli_reads_works_and_none_is_printed(fake_kaggle, monkeypatch, capsys, kind):
    home = Path.home()  # the fixture's fresh HOME
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    secret = fake_kaggle.access_token
    if kind == "kaggle.json":
        (home / ".kaggle").mkdir()
        (home / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "alice", "key": fake_kaggle.legacy_key}))
        (home / ".kaggle" / "kaggle.json").chmod(0o600)
        secret = fake_kaggle.legacy_key
    elif kind == "env key":
        monkeypatch.setenv("KAGGLE_USERNAME", "alice")
        monkeypatch.setenv("KAGGLE_KEY", secret := fake_kaggle.legacy_key)
    elif kind == "env token":
        monkeypatch.setenv("KAGGLE_API_TOKEN", secret)
    elif kind == "token file path":
        (home / "token.txt").write_text(secret + "\n")
        monkeypatch.setenv("KAGGLE_API_TOKEN", str(home / "token.txt"))
    elif kind == "access_token file":
        (home / ".kaggle").mkdir()
        (home / ".kaggle" / "access_token").write_text(secret)
    else:
        _oauth_login(home, secret)
    creds = credentials.require_credentials()
    assert creds.complete and (creds.user == "alice" or creds.user is None)  # a token's user: only Kaggle knows
    assert remote.kaggle_cli_user() == "alice"
    assert secret not in _everything(capsys)


def test_whatever_the_cli_prints_on_failure_arena_shows_its_one_line_never_a_traceback(fake_kaggle, monkeypatch,
                                                                                        capsys):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    garbage = "x" * 5000  # kagglesdk crashes on it: Path(token).exists() raises "File name too long"
    monkeypatch.setenv("KAGGLE_API_TOKEN", garbage)
    with pytest.raises(remote.KaggleCallError) as err:
        remote.kaggle_cli_user()
    shown = _everything(capsys) + str(err.value)
    assert "`kaggle config view` failed (exit 1): OSError: [Errno 36] File name too long: '***'" in shown
    assert "Traceback" not in shown and garbage not in shown
    monkeypatch.setenv("KAGGLE_API_TOKEN", fake_kaggle.access_token)
    fake_kaggle.stop()  # a token login to an unreachable Kaggle
    with pytest.raises(remote.KaggleCallError) as err:
        remote.kaggle_cli_user()
    shown = _everything(capsys) + str(err.value)
    assert "could not reach Kaggle (a connection error: " in shown and "Traceback" not in shown
    assert len(str(err.value).splitlines()) == 1 and fake_kaggle.access_token not in shown


def test_a_secret_in_cli_output_is_masked(monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "KGAT_super-secret-value")
    assert remote.redact("Bearer KGAT_super-secret-value refused") == "Bearer *** refused"


# ---- the competition: kaggle.competition, the live one by default-------------------------------------------

def test_data_download_fetches_the_configured_competition(fake_kaggle, tmp_path, capsys):
    fake_kaggle.competition_files = {LMSYS: {"train.csv": b"closed\n"},
                                     LIVE: {"train.csv": b"live\n", "test.csv": b"live test\n"},
                                     WSDM: {"train.parquet": b"PAR1", "test.parquet": b"PAR1"}}
    assert cli.main(["data", "download", "--out", str(tmp_path / "default")]) == 0  # the default recipe's
    assert cli.main(["data", "download", "--out", str(tmp_path / "lmsys"), "--set", f"kaggle.competition={LMSYS}"]) == 0
    assert cli.main(["data", "download", "--out", str(tmp_path / "wsdm"), "--set", f"kaggle.competition={WSDM}"]) == 0
    assert [c["competitionName"] for c in fake_kaggle.called("DownloadDataFiles")] == [LIVE, LMSYS, WSDM]
    assert sorted(p.name for p in (tmp_path / "default").iterdir()) == ["test.csv", "train.csv"]  # the zip removed
    assert (tmp_path / "default" / "train.csv").read_text() == "live\n"
    assert (tmp_path / "lmsys" / "train.csv").read_text() == "closed\n"
    assert sorted(p.name for p in (tmp_path / "wsdm").iterdir()) == ["test.parquet", "train.parquet"]
    assert cli.main(["data", "download", "--out", str(tmp_path / "x"), "--set", "kaggle.competition=lmsys"]) == 2
    assert "--set: kaggle.competition: lmsys: arena knows the task of" in capsys.readouterr().err
    assert len(fake_kaggle.called("DownloadDataFiles")) == 3  # refused before any call


def test_an_unknown_competition_is_refused_by_kaggle(fake_kaggle, tmp_path, capsys):
    unknown = "no-such-competition"
    with pytest.raises(UserError, match=f"competition {unknown} \\(kaggle.competition\\): Kaggle has none"):
        remote.download_competition_data(str(tmp_path / "data"), unknown)
    with pytest.raises(remote.KaggleCallError, match=f"{unknown}.* not found") as err:
        remote.run_kaggle(["competitions", "submissions", unknown, "--csv"])
    assert err.value.not_found
    # kaggle 2.2.5 raises on a 404 to submit (2.2.4 exited 1 with the raw HTTP error)
    with pytest.raises(remote.KaggleCallError, match="exit 1, reported in its output\\): Could not find competition "
                                                     "or notebook") as err:
        remote.run_kaggle(["competitions", "submit", unknown, "-k", "alice/arena-inference", "-v", "1", "-f",
                           "submission.csv", "-m", "x"])
    assert err.value.not_found
    assert not fake_kaggle.submissions
    bundle = Bundle(fake_bundle(tmp_path, kaggle_cfg(), user="alice"))
    meta = json.loads(bundle.kernel_metadata.read_text())
    bundle.kernel_metadata.write_text(json.dumps(meta | {"competition_sources": [unknown]}))
    for slug in ("arena-adapter", "arena-wheels"):  # valid: only the competition is not
        fake_kaggle.datasets[f"alice/{slug}"] = FakeDataset(f"alice/{slug}", [DatasetVersion(1, "ready", [])])
    with pytest.raises(remote.KaggleCallError, match=f"not valid competition sources.*{unknown}"):
        remote.run_kaggle(["kernels", "push", "-p", str(bundle.kernel)])
    assert cli.main(["runs", "--runs-dir", str(tmp_path / "runs"), "--fetch-lb", "--competition", unknown]) == 2
    assert f"Competition '{unknown}' not found" in capsys.readouterr().err  # any slug: Kaggle's word on it
    assert fake_kaggle.called("ListSubmissions")[-1]["competitionName"] == unknown


def test_the_wsdm_cup_bundle_attaches_its_competition_and_is_submitted_there(fake_kaggle, tmp_path):
    """A bundle for the WSDM Cup: the kernel reads its test.parquet; Kaggle takes the push and the submission."""
    bundle = Bundle(fake_bundle(tmp_path, kaggle_cfg(competition=WSDM), user="alice"))
    assert json.loads(bundle.kernel_metadata.read_text())["competition_sources"] == [WSDM]
    script = bundle.kernel_script.read_text()
    assert f"COMPETITION = '{WSDM}'" in script and "TEST_FILE = 'test.parquet'" in script
    for slug in ("arena-adapter", "arena-wheels"):
        fake_kaggle.datasets[f"alice/{slug}"] = FakeDataset(f"alice/{slug}", [DatasetVersion(1, "ready", [])])
    pushed = remote.run_kaggle(["kernels", "push", "-p", str(bundle.kernel)]).stdout
    assert "Kernel version 1 successfully pushed" in pushed
    assert fake_kaggle.kernels["arena-inference"].versions[-1].metadata["competitionDataSources"] == [WSDM]
    out = remote.run_kaggle(["competitions", "submit", WSDM, "-k", "alice/arena-inference", "-v", "1", "-f",
                             "submission.csv", "-m", "x"]).stdout
    assert "Successfully submitted to WSDM Cup - Multilingual Chatbot Arena" in out
    assert fake_kaggle.competition_of(fake_kaggle.submissions[0].ref) == WSDM


@pytest.mark.e2e
def test_package_rehearse_and_push_to_lmsys_by_setting(fake_kaggle, tmp_path, tiny_run, capfd):
    """The run's recipe names the closed LMSYS competition: the bundle attaches it, the rehearsal mounts its test.csv
    where Kaggle does (here in the older layout, /kaggle/input/<slug>), the kernel finds it there and writes a valid
    submission, and push submits that to it."""
    from arena import data
    from arena.kaggle import bundle as bundle_mod
    from arena.kaggle import rehearsal
    from arena.task import THREE_WAY
    LABEL_COLUMNS = THREE_WAY.label_columns

    source = "someone/tiny-gemma2/transformers/default/1"
    run = tmp_path / "runs" / "lmsys-20260101-000000"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("config.yaml", "predictions", "kaggle-bundle-*"))
    raw = config.load_run(RunFolder(tiny_run)).to_dict()
    raw["kaggle"] |= {"competition": LMSYS, "base_model_source": source}
    config.dump(config.from_dict(raw), run / "config.yaml")
    test = data.generate_sample(12, seed=4).drop(columns=LABEL_COLUMNS)
    data.write_csv(test, tmp_path / "input" / "test.csv")

    bundle = bundle_mod.package(run, out_dir=tmp_path / "bundle", wheels=False)
    assert json.loads(Bundle(bundle).kernel_metadata.read_text())["competition_sources"] == [LMSYS]
    assert f"COMPETITION = '{LMSYS}'" in Bundle(bundle).kernel_script.read_text()
    work = tmp_path / "work"
    submission = rehearsal.run_local(bundle, tmp_path / "input", work_dir=work, layout="old")
    mounted = work / "kaggle" / "input" / LMSYS / "test.csv"
    assert mounted.is_symlink() and not (work / "kaggle" / "input" / LIVE).exists()
    assert f"--data {mounted}" in (work / "kernel.log").read_text()  # the kernel found it there
    data.validate_submission(data.read_columns(submission, "submission"), test["id"])

    # package's wheelhouse download needs the network (as in _fake_bundle, a stand-in for what push checks is there)
    (Bundle(bundle).wheels / "transformers-5.23.0-py3-none-any.whl").write_bytes(b"")
    fake_kaggle.models[source] = "ok"
    fake_kaggle.on_kernel_push = run_like_arena_kernel(fake_kaggle, submission=submission.read_text())
    assert _push(run, bundle) == 0
    assert fake_kaggle.kernels["arena-inference"].versions[-1].metadata["competitionDataSources"] == [LMSYS]
    [submit] = fake_kaggle.called("CreateCodeSubmission")
    assert submit["competitionName"] == LMSYS and fake_kaggle.competition_of(fake_kaggle.submissions[0].ref) == LMSYS
    assert (run / "kaggle" / "arena-inference-v1" / "submission.csv").read_text() == submission.read_text()
    assert "Successfully submitted to LMSYS - Chatbot Arena Human Preference Predictions" in capfd.readouterr().out
