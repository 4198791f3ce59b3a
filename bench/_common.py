"""What the benchmarks share: free loopback ports, waiting for a server, test device identifiers."""

from __future__ import annotations

import random
import socket
import time

import httpx

from bulkchange.domain.identifiers import luhn_check_digit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, deadline_s: float = 30.0) -> None:
    """Return once ``url`` answers at all (any status); fail after ``deadline_s``."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def new_iccid(rng: random.Random, prefix: str = "8901260") -> str:
    """A valid ICCID (19 digits + Luhn) from ``rng``."""
    body = prefix + "".join(rng.choice("0123456789") for _ in range(12))
    return body + luhn_check_digit(body)


def new_imei(rng: random.Random) -> str:
    """A valid IMEI (14 digits + Luhn) from ``rng``."""
    body = "35" + "".join(rng.choice("0123456789") for _ in range(12))
    return body + luhn_check_digit(body)
