"""Which annotator holds which study, so annotators asking in turn are handed different studies."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable


def client_key(request: dict) -> str | None:
    """The request's ``client_id``, or None for a request without one (it reserves nothing)."""
    client = request.get("client_id")
    if isinstance(client, str) and client.strip():
        return client.strip()
    return None


class Reservations:
    """Studies handed out, each held for one client for ``minutes``; in memory, thread-safe.

    A client holds at most one study: asking again moves its reservation to the study it is handed
    (which may be the same one). A reservation ends when it expires; the study is then free for anyone.
    A request without a client id is handed a study no one holds but reserves nothing: otherwise any
    number of anonymous calls could lock every study away from the annotators.

    Args:
        minutes: how long a handed-out study is held; 0 turns reservations off.
        clock: seconds since the epoch; injectable for tests.
    """

    def __init__(self, minutes: float, *, clock: Callable[[], float] = time.time):
        if not (0 <= minutes < math.inf):
            raise ValueError(f"reservation minutes must be a number >= 0, got {minutes!r}")
        self.minutes = minutes
        self._clock = clock
        self._by_study: dict[str, tuple[str, float]] = {}  # study id -> (client, expiry time)
        self._by_client: dict[str, str] = {}
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        for study, (client, until) in list(self._by_study.items()):
            if until <= now:
                del self._by_study[study]
                if self._by_client.get(client) == study:
                    del self._by_client[client]

    def claim(self, client: str | None, preference: Iterable[str]) -> tuple[str, float | None] | None:
        """Reserve for ``client`` the first study in ``preference`` that no other client holds.

        Returns:
            (study id, expiry time in epoch seconds, or None when nothing was reserved), or None when
            every study is held by another client.
        """
        with self._lock:
            now = self._clock()
            self._expire(now)
            chosen = next((s for s in preference if self._by_study.get(s, (client,))[0] == client), None)
            if chosen is None:
                return None
            if client is None or self.minutes <= 0:
                return chosen, None
            until = now + 60.0 * self.minutes
            if self.minutes > 0:
                previous = self._by_client.pop(client, None)
                if previous is not None:
                    self._by_study.pop(previous, None)
                self._by_study[chosen] = (client, until)
                self._by_client[client] = chosen
            return chosen, until

    def holder(self, study: str) -> str | None:
        """The client holding ``study`` now, or None."""
        with self._lock:
            self._expire(self._clock())
            held = self._by_study.get(study)
        return held[0] if held else None
