"""Kaggle credentials: every place the kaggle CLI (2.2.5, kagglesdk/kaggle_env.py) authenticates from, a check
before any network call, and the user name for dataset and kernel ids. No secret is ever printed: `secrets()`
gives their values so that remote.run_kaggle masks them in anything it echoes.

Where the CLI looks, in its order (KaggleApi.authenticate): an access token (KAGGLE_API_TOKEN, a value or a file
path; ~/.kaggle/access_token or access_token.txt), whose user name Kaggle tells it; the legacy API key
(KAGGLE_USERNAME + KAGGLE_KEY, or kaggle.json); its own stored login (`kaggle auth login`:
~/.kaggle/credentials.json)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from arena.errors import UserError
from arena.records import RecordError, read_record

PLACEHOLDER_USER = "your-kaggle-username"
OAUTH_FILE = Path("~/.kaggle/credentials.json")


@dataclass
class Credentials:
    user: str | None  # known without asking Kaggle (legacy key, stored login); None for an access token alone
    method: str | None  # "access token (...)", "API key (...)", "stored login (...)": what the CLI will use
    config_file: Path | None  # kaggle.json, when one exists
    secret_values: list[str] = field(default_factory=list, repr=False)

    @property
    def complete(self) -> bool:
        return self.method is not None


def kaggle_config_dir() -> Path:
    """Where the kaggle CLI looks for kaggle.json (KAGGLE_CONFIG_DIR, ~/.kaggle, else ~/.config/kaggle)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    legacy = Path.home() / ".kaggle"
    if legacy.exists():
        return legacy
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"


def _read_json(path: Path, what: str) -> dict:
    try:
        return read_record(path, quote_errors=False)  # the message of a JSON error may quote the key: never shown
    except RecordError as exc:
        raise UserError(f"{path}: not a Kaggle API token: {exc.why}; it should be {what}") from None


def _read_token_file(path: Path, what: str) -> str:
    """A token file's text; a clear error (never the content) for a folder, an unreadable or a non-text file."""
    if path.is_dir():
        raise UserError(f"{what} names {path}, a folder: it should be an access token or a file holding one")
    try:
        return path.read_bytes().decode("utf-8").strip()
    except OSError as exc:
        raise UserError(f"{path}: the access token file cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (undecodable bytes): it should hold an access token from "
                        f"https://www.kaggle.com/settings/api") from None


def _access_token() -> tuple[str | None, str | None]:
    """The access token the CLI would use and where it comes from (kaggle_env.get_access_token_from_env)."""
    value = os.environ.get("KAGGLE_API_TOKEN")
    if value:
        # os.path.exists, as the CLI asks: False for a value too long to be a file name (pathlib raises, quoting it)
        if os.path.exists(value):
            text = _read_token_file(Path(value), "KAGGLE_API_TOKEN")
            return (text or None), f"the file KAGGLE_API_TOKEN names ({value})"
        return value, "KAGGLE_API_TOKEN"
    for name in ("access_token", "access_token.txt"):
        path = Path.home() / ".kaggle" / name
        if path.is_file() and (text := _read_token_file(path, str(path))):
            return text, str(path)
    return None, None


def find_credentials() -> Credentials:
    """What the kaggle CLI will authenticate with, from the places it reads (no network call)."""
    path = kaggle_config_dir() / "kaggle.json"
    stored = {}
    if path.is_file():
        stored = _read_json(path, '{"username": "...", "key": "..."} as downloaded from kaggle.com/settings')
        if not all(isinstance(stored.get(k, ""), str) for k in ("username", "key")):
            raise UserError(f"{path}: not a Kaggle API token: expected a JSON object "
                            '{"username": "...", "key": "..."} as downloaded from kaggle.com/settings')
    # The CLI's config: kaggle.json, then every KAGGLE_* variable over it (KaggleApi.read_config_environment).
    legacy_user = os.environ.get("KAGGLE_USERNAME") or stored.get("username")
    legacy_key = os.environ.get("KAGGLE_KEY") or stored.get("key")
    oauth_path = OAUTH_FILE.expanduser()
    oauth = {}
    if oauth_path.is_file():
        oauth = _read_json(oauth_path, "the login `kaggle auth login` stores")
    token, token_source = _access_token()
    secrets = [s for s in (legacy_key, token, oauth.get("refresh_token"), oauth.get("access_token"))
               if isinstance(s, str) and len(s) >= 4]
    config_file = path if path.is_file() else None
    if token:  # the CLI tries it first and takes the user name Kaggle reports for it
        return Credentials(None, f"access token ({token_source})", config_file, secrets)
    if legacy_user and legacy_key:
        where = "KAGGLE_USERNAME/KAGGLE_KEY" if os.environ.get("KAGGLE_KEY") else str(path)
        return Credentials(legacy_user, f"API key ({where})", config_file, secrets)
    if oauth.get("refresh_token"):
        return Credentials(oauth.get("username") or None, f"stored login ({oauth_path})", config_file, secrets)
    return Credentials(legacy_user, None, config_file, secrets)


def secrets() -> list[str]:
    """The secret values the kaggle CLI may use (to mask them in echoed output); [] when unreadable."""
    try:
        return find_credentials().secret_values
    except (UserError, OSError):
        return []


def warn_permissions(creds: Credentials) -> None:
    if creds.config_file is None:
        return
    mode = creds.config_file.stat().st_mode & 0o777
    if mode & 0o077:
        print(f"warning: {creds.config_file} is readable by other users (mode {mode:o}); "
              f"run: chmod 600 {creds.config_file}", file=sys.stderr)


def require_credentials() -> Credentials:
    """Credentials for a real kaggle call, or UserError (exit 2) before anything reaches the network."""
    creds = find_credentials()
    warn_permissions(creds)
    if not creds.complete:
        where = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle") / "kaggle.json"
        missing = "a user name but no API key" if creds.user else "none found"
        raise UserError(
            f"no Kaggle credentials ({missing}): nothing was sent to Kaggle. Any one of these works: "
            f"`kaggle auth login`; an access token from https://www.kaggle.com/settings/api in KAGGLE_API_TOKEN or "
            f"~/.kaggle/access_token (chmod 600); a legacy API key saved as {where} (chmod 600) or set as "
            f"KAGGLE_USERNAME and KAGGLE_KEY. `arena push --dry-run` shows the commands without credentials.")
    return creds


def parse_config_view(text: str) -> str | None:
    """The user name in `kaggle config view` output ("- username: alice"), None when it shows none."""
    for line in text.splitlines():
        key, _, value = line.strip().removeprefix("- ").partition(": ")
        if key == "username" and value.strip() not in ("", "None"):
            return value.strip()
    return None


def kaggle_user() -> str:
    """The Kaggle user name for dataset and kernel ids when it is known without a network call, or the
    placeholder (packaging needs no credentials: `arena push` asks the CLI and fills in the user)."""
    try:
        return find_credentials().user or PLACEHOLDER_USER
    except UserError as exc:
        print(f"warning: {exc}; the bundle uses the placeholder user {PLACEHOLDER_USER}", file=sys.stderr)
        return PLACEHOLDER_USER
