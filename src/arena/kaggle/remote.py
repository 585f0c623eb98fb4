"""The kaggle CLI as a subprocess, the only way arena talks to kaggle.com (after a credentials check), and the
competition-data download.

Every call goes through `run_kaggle`, which first makes sure the CLI is the version whose output it judges (kaggle
2.2.5, requirements.txt), then judges each call by its output as well as its exit code: the CLI prints several
failures and still exits 0 (`datasets create` / `datasets version`: "Dataset (version) creation error: ...";
`kernels push`: invalid dataset, competition or kernel sources, "Kernel push error: ..."), so each command has its
failure patterns and, where Kaggle confirms success in words, the line that must be there (`competitions submit`:
`Submission ref: N`, which only a submission Kaggle accepted has)."""

from __future__ import annotations

import functools
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from arena.errors import UserError
from arena.kaggle import credentials as credentials_mod
from arena.kaggle.credentials import require_credentials

# The CLI version whose output `judge` reads (requirements.txt). 2.2.4 parses `owner/slug/N` but sends no version
# (status and output are then the latest session's), and never prints `Submission ref: N`.
CLI_VERSION = (2, 2, 5)


def fetch_kernel_output(ref: str, folder: Path, quiet: bool = True, echo: bool = True):
    """`kaggle kernels output REF` (`owner/slug/N`: that version's output) into `folder`, judged like every call:
    the CLI refuses a file name that would land outside `folder` and a download that fails (exit 1)."""
    return run_kaggle(["kernels", "output", ref, "-p", str(folder), "--force", *(["-q"] if quiet else [])], echo=echo)


class KaggleCallError(UserError):
    """A kaggle CLI call that failed, by its exit code or by what it printed."""

    def __init__(self, message: str, output: str = "", not_found: bool = False, reached: bool = True):
        super().__init__(message)
        self.output = output
        self.not_found = not_found
        self.reached = reached  # False: no answer from Kaggle (connection refused, timeout) or credentials refused


@dataclass(frozen=True)
class Judgement:
    failures: tuple[str, ...] = ()  # regexes: any match in the output is a failure (first group: the reason)
    success: str | None = None  # regex that must match, when the command confirms success in words


SUBMISSION_REF = r"Submission ref: (\d+)"
# Failure lines of the kaggle 2.2.5 CLI (kaggle/api/kaggle_api_extended.py, the *_cli wrappers). `competitions submit`
# raises on a 404 ("Could not find competition or notebook ...", exit 1; 2.2.4 meant to print "Could not find
# competition" and exit 0, but a 404 Response is falsy, so that branch never ran); "N submissions remaining today."
# follows any answer, a refused submission's too: only `Submission ref: N` confirms one.
JUDGEMENTS = {
    ("datasets", "create"): Judgement((r"Dataset creation error: ?(.*)", r"(not valid tags.*)"),
                                      r"Dataset is being created"),
    ("datasets", "version"): Judgement((r"Dataset version creation error: ?(.*)", r"(not valid tags.*)"),
                                       r"Dataset version is being created"),
    ("kernels", "push"): Judgement((r"Kernel push error: ?(.*)",
                                    r"(not valid (?:dataset|competition|kernel|model) sources.*)"),
                                   r"Kernel version \d+ successfully pushed"),
    ("competitions", "submit"): Judgement((r"(Could not find competition.*)",), SUBMISSION_REF),
}
# Output of any command that means it never got a proper answer.
_UNREACHABLE = re.compile(r"Max retries exceeded|Connection refused|NewConnectionError|Failed to resolve|"
                          r"Name or service not known|Read timed out|ConnectTimeout")
_UNAUTHORIZED = re.compile(r"401 Client Error|Unauthenticated|kaggle auth login|Invalid credentials", re.I)
_NOT_FOUND = re.compile(r"404|not found", re.I)
_TRACEBACK = "Traceback (most recent call last)"
# The hints the CLI prints after an HTTP error's own line (kaggle_api_extended._HTTP_ERROR_HINTS, format_http_error).
_HTTP_HINTS = ("You don't have access to this resource.", "The resource was not found.", "You have been rate limited.",
               "This is a problem on Kaggle's side")


def kaggle_executable() -> str:
    """The kaggle CLI of this environment (beside this Python), else the one on PATH."""
    beside = Path(sys.executable).parent / "kaggle"
    if beside.is_file():
        return str(beside)
    found = shutil.which("kaggle")
    if not found:
        raise UserError("the kaggle CLI is not installed (pip install -r requirements.txt)")
    return found


def redact(text: str, secret_values=None) -> str:
    """`text` with every secret value the CLI may use replaced by ***."""
    for secret in secret_values if secret_values is not None else credentials_mod.secrets():
        text = text.replace(secret, "***")
    return text


def explain(output: str, limit: int = 300) -> str:
    """The one line of the kaggle CLI's output that explains a failure: the exception line of its (last) traceback,
    else its last line before the hint the CLI prints after an HTTP error; never a traceback. Shortened to `limit`
    characters."""
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    if any(line.startswith(_TRACEBACK) for line in lines):
        start = max(i for i, line in enumerate(lines) if line.startswith(_TRACEBACK))
        tail = [line for line in lines[start + 1:] if not line.startswith((" ", "\t"))]
        lines = tail[-1:] or lines[:start]
    hint = next((k for k, line in enumerate(lines) if line.startswith(_HTTP_HINTS)), None)
    lines = lines[:hint] or lines
    line = lines[-1].strip() if lines else ""
    return line if len(line) <= limit else line[:limit - 3] + "..."


def judge(args: list[str], returncode: int, output: str) -> None:
    """Raise KaggleCallError when `kaggle ARGS` failed, by its exit code or its output; its message holds the one
    line of the output that explains the failure (`explain`), never a traceback."""
    name = f"kaggle {' '.join(args[:2])}"
    if _UNREACHABLE.search(output):
        raise KaggleCallError(f"`{name}` could not reach Kaggle (a connection error: {explain(output)}); nothing "
                              f"more was sent", output, reached=False)
    if _UNAUTHORIZED.search(output):
        raise KaggleCallError(f"`{name}`: Kaggle refused the credentials (expired or revoked token?); "
                              f"`kaggle auth login` or a new token from https://www.kaggle.com/settings/api", output,
                              reached=False)
    rule = JUDGEMENTS.get(tuple(args[:2]), Judgement())
    not_found = returncode != 0 and bool(_NOT_FOUND.search(output))
    for pattern in rule.failures:
        match = re.search(pattern, output)
        if match:
            reason = (match.group(1) if match.groups() else match.group(0)).strip() or match.group(0)
            raise KaggleCallError(f"`{name}` failed (exit {returncode}, reported in its output): {reason}", output,
                                  not_found=not_found)
    if returncode != 0:
        raise KaggleCallError(f"`{name}` failed (exit {returncode}): {explain(output) or 'no output'}",
                              output, not_found=not_found)
    if rule.success and not re.search(rule.success, output):
        raise KaggleCallError(f"`{name}` exited 0 without confirming success; its output: "
                              f"{explain(output) or 'none'}", output)


def run_kaggle(args: list[str], echo: bool = True) -> subprocess.CompletedProcess:
    """Run `kaggle ARGS`, echoing the command and its output (secrets masked), and judge it (`judge`):
    KaggleCallError (a UserError) on any failure, with `.not_found` for a 404. UserError before anything is sent
    when the CLI is not the version `judge` reads."""
    executable = kaggle_executable()
    require_cli_version(executable)
    return _run(args, [executable, *args], f"kaggle {shlex.join(args)}", echo)


@functools.cache
def require_cli_version(executable: str) -> str:
    """The version of the kaggle CLI at `executable` (`kaggle --version`, which reads no credentials and sends
    nothing); UserError unless it is CLI_VERSION or a later 2.2.x."""
    proc = subprocess.run([executable, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    match = re.search(r"Kaggle CLI (\d+)\.(\d+)\.(\d+)", proc.stdout)
    found = tuple(int(part) for part in match.groups()) if match else None
    version = ".".join(map(str, found)) if found else None
    if found is None or found < CLI_VERSION or found[:2] != CLI_VERSION[:2]:
        raise UserError(f"the kaggle CLI at {executable} is {version or 'of no known version'} (`kaggle --version`: "
                        f"{proc.stdout.strip()[-200:] or 'no output'}); arena reads the output of kaggle "
                        f"{'.'.join(map(str, CLI_VERSION))} (versions in `owner/slug/N`, `Submission ref: N`): "
                        f"pip install -r requirements.txt")
    return version


def run_kaggle_module(module: str, args: list[str]) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` for what the CLI does not print but its library (kaggle.api) returns; judged and
    masked as run_kaggle's calls are."""
    return _run([module, *args], [sys.executable, "-m", module, *args], f"python -m {module} {shlex.join(args)}",
                echo=False)


def _run(args: list[str], argv: list[str], shown: str, echo: bool) -> subprocess.CompletedProcess:
    print(f"$ {shown}", flush=True)
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc.stdout = redact(proc.stdout)
    try:
        judge(args, proc.returncode, proc.stdout)
    except KaggleCallError:  # its error holds the line that explains it: a traceback is never shown
        if echo and proc.stdout.strip() and _TRACEBACK not in proc.stdout:
            print(proc.stdout.rstrip(), flush=True)
        raise
    if echo and proc.stdout.strip():
        print(proc.stdout.rstrip(), flush=True)
    return proc


def kaggle_cli_user() -> str:
    """The user name the kaggle CLI authenticates as (`kaggle config view`: for an access token, the name Kaggle
    reports for it). UserError before any network call without credentials."""
    require_credentials()
    user = credentials_mod.parse_config_view(run_kaggle(["config", "view"]).stdout)
    if not user:
        raise UserError("the kaggle CLI found no user name for these credentials (`kaggle config view` shows "
                        "none): the access token may be expired; `kaggle auth login` or a new token")
    return user


def download_competition_data(out: str, competition: str) -> None:
    """`arena data download`: the files of `competition` (kaggle.competition) into `out` (existing files are
    kept)."""
    require_credentials()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / f"{competition}.zip"
    try:
        run_kaggle(["competitions", "download", "-c", competition, "-p", str(out_dir)])
    except KaggleCallError as exc:
        if exc.not_found:
            raise UserError(f"{exc}\ncompetition {competition} (kaggle.competition): Kaggle has none of that name") \
                from None
        raise UserError(f"{exc}\ndownload failed; accept the rules at https://www.kaggle.com/competitions/"
                        f"{competition}/rules with the account of your API token, then retry") from None
    if not archive.is_file():
        raise UserError(f"`kaggle competitions download` wrote no {archive}; its output is above")
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            if (out_dir / member).exists():
                print(f"kept the existing {out_dir / member}")
            else:
                zf.extract(member, out_dir)
                print(f"wrote {out_dir / member}")
    archive.unlink()


def kaggle_executable_display() -> str:
    try:
        return kaggle_executable()
    except UserError:
        return "kaggle CLI not found"
