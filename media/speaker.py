"""Active-speaker detection from the ``ssrc-audio-level`` header extension of received audio, per receiver.

Each audio packet carries the publisher's level in -dBov (0 loudest, 127
silence). A participant's score is the loudness above the silence threshold
summed over a sliding window. Who is "the active speaker" depends on who
listens: a receiver's audience is the publishers it may receive (and itself),
so the courtroom's speaker is chosen among courtroom publishers only and a
private consultation never names its members to anyone outside it, nor moves
them up anyone else's last-N. Within an audience the loudest participant
becomes its active speaker once it has led for ``hold`` seconds, so a cough or
a crosstalk burst does not flip the last-N video. No timers: evaluation
happens on packet arrival, at most every ``_EVALUATE_EVERY`` seconds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

_EVALUATE_EVERY = 0.1
_MIN_SCORE_PER_SECOND = 100.0
"""A score below this (per second of window) is silence: e.g. 10 dB above the threshold half the time."""


_NO_CHANGES: tuple[tuple[str, str], ...] = ()
"""What :meth:`SpeakerDetector.observe` returns between evaluations."""


@dataclass
class _Audience:
    """What one receiver hears, and whom it last saw speak."""

    members: frozenset[str]
    leader: str | None = None
    leader_since: float = 0.0
    active: str | None = None
    recent: list[str] = field(default_factory=list)
    """Members that were this audience's active speaker, most recent first."""


class SpeakerDetector:
    """The active speaker of each receiver of one hearing, and the order in which its audience last spoke."""

    def __init__(self, *, window: float, hold: float, silence_dbov: int) -> None:
        self._window = window
        self._hold = hold
        self._silence = silence_dbov
        self._levels: dict[str, deque[tuple[float, int]]] = {}
        self._audiences: dict[str, _Audience] = {}
        self._last_evaluation = -1e9
        self.joined: list[str] = []
        """Participant ids in the order they joined."""
        self.active: str | None = None
        """The most recent speaker any receiver was told of (introspection and logs only; never sent)."""

    def join(self, participant_id: str) -> None:
        """A participant may speak from now on (placed last in every order)."""
        if participant_id not in self.joined:
            self.joined.append(participant_id)

    def leave(self, participant_id: str) -> None:
        """A participant is gone, as a speaker and as a receiver."""
        self._levels.pop(participant_id, None)
        self._audiences.pop(participant_id, None)
        if participant_id in self.joined:
            self.joined.remove(participant_id)
        for audience in self._audiences.values():
            _forget(audience, participant_id)
        if self.active == participant_id:
            self.active = None

    def set_audiences(self, audiences: Mapping[str, Iterable[str]]) -> None:
        """Who each receiver may hear now (its own id included); receivers not named are dropped."""
        for receiver in [r for r in self._audiences if r not in audiences]:
            del self._audiences[receiver]
        for receiver, members in audiences.items():
            members = frozenset(members)
            audience = self._audiences.get(receiver)
            if audience is None:
                self._audiences[receiver] = _Audience(members)
                continue
            if audience.members == members:
                continue
            audience.members = members
            for gone in [pid for pid in audience.recent if pid not in members]:
                _forget(audience, gone)
            if audience.leader not in members:
                audience.leader = None

    def active_for(self, receiver: str) -> str | None:
        """The active speaker as ``receiver`` hears it."""
        audience = self._audiences.get(receiver)
        return audience.active if audience is not None else None

    def order_for(self, receiver: str) -> list[str]:
        """Participant ids for ``receiver``'s last-N: its most recent speakers first, the rest in joining order."""
        audience = self._audiences.get(receiver)
        recent = [pid for pid in audience.recent if pid in self.joined] if audience is not None else []
        return recent + [pid for pid in self.joined if pid not in recent]

    def observe(self, participant_id: str, level_dbov: int, now: float) -> Sequence[tuple[str, str]]:
        """One packet's level; returns (receiver, new active speaker) for every receiver whose speaker changed."""
        loudness = self._silence - level_dbov
        if loudness > 0:
            samples = self._levels.get(participant_id)
            if samples is None and participant_id in self.joined:
                # Created once per joined participant: a packet from someone who left must not re-add them.
                samples = self._levels[participant_id] = deque()
            if samples is not None:
                samples.append((now, loudness))
        if now - self._last_evaluation < _EVALUATE_EVERY:
            return _NO_CHANGES  # the common case, once per audio packet: no list to allocate
        self._last_evaluation = now
        return self._evaluate(now)

    def _evaluate(self, now: float) -> list[tuple[str, str]]:
        horizon = now - self._window
        scores: dict[str, float] = {}
        for pid, samples in self._levels.items():
            while samples and samples[0][0] < horizon:
                samples.popleft()
            if samples:
                scores[pid] = float(sum(loudness for _, loudness in samples))
        threshold = _MIN_SCORE_PER_SECOND * self._window
        changes: list[tuple[str, str]] = []
        for receiver, audience in self._audiences.items():
            best: str | None = None
            best_score = threshold
            for pid in audience.members:
                score = scores.get(pid, 0.0)
                if score > best_score or (score == best_score and best is not None and pid < best):
                    best, best_score = pid, score
            if best != audience.leader:
                audience.leader = best
                audience.leader_since = now
            if best is None or best == audience.active or now - audience.leader_since < self._hold:
                continue
            audience.active = best
            if best in audience.recent:
                audience.recent.remove(best)
            audience.recent.insert(0, best)
            changes.append((receiver, best))
            self.active = best
        return changes


def _forget(audience: _Audience, participant_id: str) -> None:
    if participant_id in audience.recent:
        audience.recent.remove(participant_id)
    if audience.active == participant_id:
        audience.active = None
    if audience.leader == participant_id:
        audience.leader = None
