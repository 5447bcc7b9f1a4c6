"""Fail fast offline: a download that cannot start is one clear error within seconds.

TFDS retries a failed download for minutes and TF-Hub waits on its own timeouts; both are
asked only after the host they would download from answered a TCP connection here.
"""

from __future__ import annotations

import hashlib
import os
import socket
from urllib.parse import urlsplit

from hubsweep.errors import SetupError

CONNECT_TIMEOUT_S = 5.0


class Offline(SetupError):
    pass


def unreachable(url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why `url`'s host cannot be reached from here, or None when it can."""
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            return None
    except OSError as e:
        return f"{parts.hostname}:{port} cannot be reached ({e.strerror or e})"


def require_reachable(url: str, key: str, offline_hint: str) -> None:
    problem = unreachable(url)
    if problem:
        raise Offline(f"{key}: cannot download {url}: {problem}; {offline_hint}")


def tfhub_cached(handle: str) -> bool:
    """Whether TF-Hub already holds `handle` in its cache (then no download is needed)."""
    from tensorflow_hub import resolver

    cache = resolver.tfhub_cache_dir(use_temp=True)
    module_dir = os.path.join(cache, hashlib.sha1(handle.encode("utf8")).hexdigest())
    return os.path.isdir(module_dir) and bool(os.listdir(module_dir))
