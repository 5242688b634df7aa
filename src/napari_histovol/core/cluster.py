"""Connecting to a ``dask.distributed`` cluster (a scheduler address, or a Client)."""

from __future__ import annotations

import socket
from typing import Any

from .errors import InputError

#: How long to wait for a scheduler to answer.
CONNECT_TIMEOUT_S = 10


def dask_client(scheduler: Any):
    """A ``distributed.Client`` for an address, the Client itself, or None for local work.

    The address is checked (scheme, host and port) and the scheduler's port is tried with a
    plain socket before a Client is made, so a typo or an unreachable scheduler is one clear
    error instead of a Client that times out.

    Raises
    ------
    InputError
        When ``distributed`` is missing, the address is malformed, or the scheduler cannot be
        reached.
    """
    if scheduler is None:
        return None
    if not isinstance(scheduler, str):
        return scheduler  # a distributed.Client
    try:
        from distributed import Client
        from distributed.comm.addressing import parse_address, parse_host_port
    except ImportError:
        raise InputError(
            "A dask scheduler needs the 'distributed' package; install it (pip install distributed).",
            option="scheduler",
        ) from None
    address = scheduler.strip()
    example = "give it as tcp://HOST:PORT, for example tcp://10.0.0.5:8786"
    try:
        scheme, location = parse_address(address if "://" in address else f"tcp://{address}")
        if scheme in ("tcp", "tls", "ws", "wss"):
            host, port = parse_host_port(location)
        else:
            host = port = None
    except (ValueError, TypeError) as e:
        raise InputError(
            f"'{scheduler}' is not a dask scheduler address ({e}); {example}.", option="scheduler"
        ) from None
    if host is not None:
        try:
            with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
                pass
        except OSError as e:
            raise InputError(
                f"Cannot reach the dask scheduler at '{scheduler}' ({e.strerror or e}); start it "
                "or check the address.",
                option="scheduler",
            ) from None
    try:
        return Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, ValueError, TimeoutError) as e:
        raise InputError(
            f"Cannot connect to the dask scheduler at '{scheduler}' ({e}).", option="scheduler"
        ) from None
