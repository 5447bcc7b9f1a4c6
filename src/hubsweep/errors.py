"""User-facing errors: each message names the file, line or config key at fault."""


class HubsweepError(Exception):
    """A problem the user can fix; the CLI prints the message alone and exits non-zero."""


class ConfigError(HubsweepError):
    pass


class DataError(HubsweepError):
    pass


class EmbeddingError(HubsweepError):
    pass
