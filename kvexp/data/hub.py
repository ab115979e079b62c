"""Loading rows from the Hugging Face hub with ``datasets.load_dataset``, failing fast offline.

Without network, a plain ``load_dataset`` spends ~25 s in HTTP retries before it gives up (measured
here: five retries with back-off on a DNS failure). A sweep that falls back to a bundled copy would
pay that per job, and a job for a dataset with no bundled copy would only fail later. So:

1. If the user asked for offline mode (``HF_DATASETS_OFFLINE`` / ``HF_HUB_OFFLINE`` truthy), we call
   ``load_dataset`` in offline mode, which reads the local cache or fails in milliseconds.
2. Otherwise we first check, within ``PREFLIGHT_TIMEOUT_S``, that the hub endpoint accepts a TCP
   connection (DNS included). If it does not, we still try the local cache, in offline mode.
3. Only when the endpoint is reachable do we let ``datasets`` talk to the network.

The preflight is skipped when a proxy is configured (a direct connection says nothing then), and
its answer is remembered for ``PREFLIGHT_TTL_S`` so loading several datasets pays it once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
PREFLIGHT_TIMEOUT_S = 3.0
PREFLIGHT_TTL_S = 60.0
_TRUE = {"1", "ON", "YES", "TRUE"}
_OFFLINE_VARS = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")

_preflight_cache: dict[tuple[str, int], tuple[float, bool, str]] = {}
_offline_lock = threading.Lock()


def offline_requested() -> str | None:
    """Name of the env variable that asks for offline mode, or None. Read at call time (the
    ``datasets`` library only reads it at import, so a test or a launcher setting it later would
    otherwise be ignored)."""
    for var in _OFFLINE_VARS:
        if os.environ.get(var, "").strip().upper() in _TRUE:
            return var
    return None


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def _host_port(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed.hostname or "huggingface.co", port


def hub_reachable(timeout_s: float = PREFLIGHT_TIMEOUT_S) -> tuple[bool, str]:
    """Whether the hub endpoint accepts a TCP connection within ``timeout_s`` (DNS included).

    Returns ``(reachable, detail)``; ``detail`` says why not, for error messages. Runs the
    connection in a daemon thread because ``socket.create_connection``'s timeout does not cover
    the DNS lookup, which can block far longer on a machine without a resolver.
    """
    if any(os.environ.get(var) for var in _PROXY_VARS):
        return True, "proxy configured; preflight skipped"
    host, port = _host_port(endpoint())
    now = time.monotonic()
    cached = _preflight_cache.get((host, port))
    if cached and now - cached[0] < PREFLIGHT_TTL_S:
        return cached[1], cached[2]

    outcome: dict[str, Any] = {}

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            outcome["ok"] = True
        except OSError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=attempt, name="kvexp-hub-preflight", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if outcome.get("ok"):
        result = (True, f"{host}:{port} reachable")
    elif "error" in outcome:
        result = (False, f"cannot connect to {host}:{port} ({outcome['error']})")
    else:
        result = (False, f"no connection to {host}:{port} within {timeout_s:g}s")
    _preflight_cache[(host, port)] = (now, *result)
    return result


@contextlib.contextmanager
def _forced_offline() -> Iterator[None]:
    """Make ``datasets``/``huggingface_hub`` behave as if HF_HUB_OFFLINE=1 for one call.

    Both libraries read the variable once at import into module constants, so setting the env
    var now would have no effect; we flip the constants and restore them. Guarded by a lock
    because the flags are process-wide.
    """
    import datasets.config as ds_config
    import huggingface_hub.constants as hf_constants

    with _offline_lock:
        saved = (ds_config.HF_HUB_OFFLINE, ds_config.HF_DATASETS_OFFLINE, hf_constants.HF_HUB_OFFLINE)
        ds_config.HF_HUB_OFFLINE = ds_config.HF_DATASETS_OFFLINE = True
        hf_constants.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            (ds_config.HF_HUB_OFFLINE, ds_config.HF_DATASETS_OFFLINE, hf_constants.HF_HUB_OFFLINE) = saved


class HubLoadError(RuntimeError):
    """``load_dataset`` failed; the message is one line fit for `DatasetUnavailableError`."""


def load_rows(
    path: str,
    config: str | None,
    split: str,
    *,
    cache_dir: str | None = None,
    hub_kwargs: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Rows of ``load_dataset(path, config, split=split)`` as plain dicts, in split order.

    Raises:
        HubLoadError: the dataset could not be loaded from the hub or the local HF cache; the
            message names the mode that was tried (online, offline by request, offline because
            the hub is unreachable) and the underlying error.
    """
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a hard dependency
        raise HubLoadError(f"the `datasets` package is not importable ({exc})") from exc

    kwargs: dict[str, Any] = {"split": split}
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    kwargs.update(hub_kwargs or {})
    args = (path,) if config is None else (path, config)

    offline_var = offline_requested()
    reachable, detail = (True, "") if offline_var else hub_reachable()
    if offline_var:
        mode = f"offline mode ({offline_var} set): local HF cache only"
    elif not reachable:
        mode = f"hub unreachable ({detail}): local HF cache only"
    else:
        mode = "online"

    try:
        if offline_var or not reachable:
            with _forced_offline():
                dataset = datasets.load_dataset(*args, **kwargs)
        else:
            dataset = datasets.load_dataset(*args, **kwargs)
    except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFoundError ...)
        message = " ".join(str(exc).split()) or "no message"
        if len(message) > 300:
            message = message[:297] + "..."
        raise HubLoadError(f"{mode}; {type(exc).__name__}: {message}") from exc
    rows = [dict(row) for row in dataset]
    logger.info("loaded %s (%s, split %s) from the hub [%s]: %d rows", path, config, split, mode, len(rows))
    return rows
