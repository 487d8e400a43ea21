"""Active-speaker detection from the ``ssrc-audio-level`` header extension of received audio.

Each audio packet carries the publisher's level in -dBov (0 loudest, 127
silence). A participant's score is the loudness above the silence threshold
summed over a sliding window; the loudest participant becomes the active
speaker once it has led for ``hold`` seconds, so a cough or a crosstalk burst
does not flip the last-N video. No timers: evaluation happens on packet
arrival, at most every ``_EVALUATE_EVERY`` seconds.
"""

from __future__ import annotations

from collections import deque

_EVALUATE_EVERY = 0.1
_MIN_SCORE_PER_SECOND = 100.0
"""A score below this (per second of window) is silence: e.g. 10 dB above the threshold half the time."""


class SpeakerDetector:
    """The active speaker of one hearing and the order in which participants last spoke."""

    def __init__(self, *, window: float, hold: float, silence_dbov: int) -> None:
        self._window = window
        self._hold = hold
        self._silence = silence_dbov
        self._levels: dict[str, deque[tuple[float, int]]] = {}
        self._leader: str | None = None
        self._leader_since = 0.0
        self._last_evaluation = -1e9
        self.active: str | None = None
        self.order: list[str] = []
        """Participant ids, most recent active speaker first; others in the order they joined."""

    def join(self, participant_id: str) -> None:
        """A participant may speak from now on (placed last in the order)."""
        if participant_id not in self.order:
            self.order.append(participant_id)

    def leave(self, participant_id: str) -> None:
        """A participant is gone."""
        self._levels.pop(participant_id, None)
        if participant_id in self.order:
            self.order.remove(participant_id)
        if self.active == participant_id:
            self.active = None
        if self._leader == participant_id:
            self._leader = None

    def observe(self, participant_id: str, level_dbov: int, now: float) -> str | None:
        """One packet's level; returns the new active speaker when it changes, else None."""
        loudness = self._silence - level_dbov
        if loudness > 0:
            samples = self._levels.get(participant_id)
            if samples is None and participant_id in self.order:
                # Created once per joined participant: a packet from someone who left must not re-add them.
                samples = self._levels[participant_id] = deque()
            if samples is not None:
                samples.append((now, loudness))
        if now - self._last_evaluation < _EVALUATE_EVERY:
            return None
        self._last_evaluation = now
        return self._evaluate(now)

    def _evaluate(self, now: float) -> str | None:
        horizon = now - self._window
        best: str | None = None
        best_score = _MIN_SCORE_PER_SECOND * self._window
        for pid, samples in self._levels.items():
            while samples and samples[0][0] < horizon:
                samples.popleft()
            score = float(sum(loudness for _, loudness in samples))
            if score > best_score:
                best, best_score = pid, score
        if best != self._leader:
            self._leader = best
            self._leader_since = now
        if best is None or best == self.active or now - self._leader_since < self._hold:
            return None
        self.active = best
        if best in self.order:
            self.order.remove(best)
        self.order.insert(0, best)
        return best
