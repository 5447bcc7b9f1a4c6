"""User-facing errors: each message names the file, line or config key at fault."""

import errno
import os
import re

# OSError numbers that mean the disk is full or read-only: a write error to name, not a bug.
FULL_OR_READ_ONLY = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


class HubsweepError(Exception):
    """A problem the user can fix; the CLI prints the message alone and exits non-zero."""


class ConfigError(HubsweepError):
    pass


def require(condition: bool, key: str, problem: str) -> None:
    """Raise `key: problem` as a ConfigError unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{key}: {problem}")


class SetupError(HubsweepError):
    """The machine, not the config's values, is at fault: missing files, unwritable
    directories, no network. In a sweep such a failure does not use up the trial budget."""


class DataError(SetupError):
    pass


class EmbeddingError(SetupError):
    pass


class Interrupted(HubsweepError):
    """Ctrl-C: work stopped cleanly (a sweep's running trials were queued again); the CLI
    prints the message and exits 130, as a shell reports a process stopped by SIGINT."""


# A list item holding "=" unquoted (`+arms.adam=[optimizer=adam]`): Hydra's grammar reads
# it as a broken key=value, and its message then names neither the override nor the fix.
_UNQUOTED_ITEM = re.compile(r"[\[,]\s*[\w.+~/-]+=")


def override_error(command: str, override: str, hydra_message: str) -> str:
    """Hydra's parse error for one override as one of ours: naming the override, and how to
    quote a list item that holds "=" where that is the likely cause."""
    message = f"{command}: error: override {override!r}: {hydra_message}"
    if _UNQUOTED_ITEM.search(override.partition("=")[2]):
        message += (
            f"{os.linesep}quote each list item that holds '=': \"+arms.adam=['optimizer=adam']\""
        )
    return message
