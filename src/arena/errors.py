"""Errors meant for the user: the CLI prints them without a traceback and exits with code 2."""


class UserError(Exception):
    """Bad input or configuration; the message says which file, row id, column or key."""

    def __init__(self, message: str = "", problems: list[str] | None = None):
        self.problems = list(problems or ([message] if message else []))
        if not message:
            message = "\n".join(self.problems)
        super().__init__(message)
