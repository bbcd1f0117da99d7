"""User-facing errors: the CLI prints their message (no traceback) and exits non-zero."""

MAX_LISTED = 20


class UserError(Exception):
    """A problem the user can fix (bad input, bad config). Printed as-is by the CLI."""

    exit_code = 2


class DataError(UserError):
    """One or more problems in the input data, each as 'file:line: field: message'."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        shown = self.problems[:MAX_LISTED]
        more = len(self.problems) - len(shown)
        text = "\n".join(shown)
        if more:
            text += f"\n... and {more} more problem(s)"
        text += "\n(fix the rows above, or pass --skip_invalid to drop them and count them in the report)"
        super().__init__(text)


class ConfigError(UserError):
    """One or more problems in the config, each naming the key to change."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid config:\n" + "\n".join(f"  - {p}" for p in self.problems))
