"""Connecting to a ``dask.distributed`` cluster (a scheduler address, or a Client)."""

from __future__ import annotations

from typing import Any

from .errors import InputError


def dask_client(scheduler: Any):
    """A ``distributed.Client`` for an address, the Client itself, or None for local work.

    Raises
    ------
    InputError
        When ``distributed`` is missing or the scheduler cannot be reached.
    """
    if scheduler is None:
        return None
    if not isinstance(scheduler, str):
        return scheduler  # a distributed.Client
    try:
        from distributed import Client
    except ImportError:
        raise InputError(
            "A dask scheduler needs the 'distributed' package; install it (pip install distributed).",
            option="scheduler",
        ) from None
    try:
        return Client(scheduler, timeout="10s")
    except OSError as e:
        raise InputError(f"Cannot reach the dask scheduler at '{scheduler}' ({e}).") from None
