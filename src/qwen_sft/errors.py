"""User-facing errors: the CLI prints their message (no traceback) and exits non-zero."""

MAX_LISTED = 20
# `prepare` has the flag; `check`, `inspect` and `train` take the config key (or skip_invalid=true).
SKIP_HINT = ("(fix the rows above, or drop them with --skip_invalid (prepare) or skip_invalid: true (config); "
             "dropped rows are counted in the report)")


class UserError(Exception):
    """A problem the user can fix (bad input, bad config). Printed as-is by the CLI."""

    exit_code = 2


STOP_EXIT_CODE = 3
STOPPED_BEFORE_START = "stopped before the first step; nothing to save"  # the trainer's words, shown by the UI too


class StopRequested(UserError):
    """Raised after a graceful stop saved its checkpoint (exit code 3)."""

    exit_code = STOP_EXIT_CODE


class DataError(UserError):
    """One or more problems in the input data, each as 'file:line: field: message'."""

    def __init__(self, problems: list[str], skippable: bool = True):
        """skippable: False for whole-file problems (empty, not UTF-8, broken CSV quoting), which
        skip_invalid does not drop, so the message does not offer it."""
        self.problems = list(problems)
        shown = self.problems[:MAX_LISTED]
        more = len(self.problems) - len(shown)
        text = "\n".join(shown)
        if more:
            text += f"\n... and {more} more problem(s)"
        if skippable:
            text += f"\n{SKIP_HINT}"
        super().__init__(text)


class ConfigError(UserError):
    """One or more problems in the config, each naming the key to change."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid config:\n" + "\n".join(f"  - {p}" for p in self.problems))
