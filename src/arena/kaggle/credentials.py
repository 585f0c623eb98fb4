"""Kaggle credentials: where the kaggle CLI finds them, the user name for dataset and kernel ids, and a check
before any network call. Only the user name is ever read out; no secret is printed."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from arena.errors import UserError

PLACEHOLDER_USER = "your-kaggle-username"


@dataclass
class Credentials:
    user: str | None  # None: no user name anywhere
    has_secret: bool  # an API key or access token is available to the kaggle CLI
    config_file: Path | None  # kaggle.json, when one exists

    @property
    def complete(self) -> bool:
        return bool(self.user) and self.has_secret


def kaggle_config_dir() -> Path:
    """Where the kaggle CLI looks for kaggle.json (KAGGLE_CONFIG_DIR, ~/.kaggle, else ~/.config/kaggle)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    legacy = Path.home() / ".kaggle"
    if legacy.exists():
        return legacy
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"


def find_credentials() -> Credentials:
    """The Kaggle user name and whether a secret exists, from the places the kaggle CLI reads."""
    path = kaggle_config_dir() / "kaggle.json"
    stored: dict = {}
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # the message of a JSON error may quote the key: never shown
            raise UserError(f"{path}: not readable as JSON ({type(exc).__name__}); it should be "
                            '{"username": "...", "key": "..."} as downloaded from kaggle.com/settings') from None
        if not isinstance(stored, dict) or not all(isinstance(stored.get(k, ""), str) for k in ("username", "key")):
            raise UserError(f"{path}: not a Kaggle API token: expected a JSON object "
                            '{"username": "...", "key": "..."} as downloaded from kaggle.com/settings')
    user = os.environ.get("KAGGLE_USERNAME") or stored.get("username")
    token_file = Path.home() / ".kaggle" / "access_token"
    has_secret = bool(os.environ.get("KAGGLE_KEY") or stored.get("key") or os.environ.get("KAGGLE_API_TOKEN")
                      or token_file.is_file())
    return Credentials(user=user, has_secret=has_secret, config_file=path if path.is_file() else None)


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
        missing = "no user name" if creds.has_secret else "no API key" if creds.user else "none found"
        raise UserError(
            f"no Kaggle credentials ({missing}): nothing was sent to Kaggle. Create an API token at "
            f"https://www.kaggle.com/settings/api and save it as {where} (chmod 600), or set KAGGLE_USERNAME "
            f"and KAGGLE_KEY. `arena push --dry-run` shows the commands without credentials.")
    return creds


def kaggle_user() -> str:
    """The Kaggle user name for dataset and kernel ids, or the placeholder when there is none (or the token
    file is broken: packaging needs no credentials, `arena push` fills in the user and checks the token)."""
    try:
        return find_credentials().user or PLACEHOLDER_USER
    except UserError as exc:
        print(f"warning: {exc}; the bundle uses the placeholder user {PLACEHOLDER_USER}", file=sys.stderr)
        return PLACEHOLDER_USER

