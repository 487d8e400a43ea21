"""The node's receive path: a publisher's SRTP datagrams reach its receiver without aiortc's queue and receive task.

aiortc receives one RTP packet in several hops, each in Python: aioice queues the datagram, the DTLS transport's
task wakes for it, unprotects it through pylibsrtp's wrapper, parses it (``RtpPacket.parse``), routes it and awaits
the receiver's handler. :func:`install` gives each DTLS transport of a peer connection an
:class:`media.aiortc_compat.RtpIntake`: the datagram is unprotected and parsed by one C call
(``media._fastpath.recv_rtp``, libsrtp's ``srtp_unprotect`` on the transport's own session), routed by the
transport's own router, and the receiver's own handler (statistics and receiver reports, NACK, RTX, REMB, PLI, the
node's jitter-buffer tap) runs at once, on the event loop, as the datagram is read.

SRTCP (sender reports, BYE, the subscribers' receiver reports, NACK, PLI, REMB) is unprotected in C too and handed
to its recipients' handlers the same way. STUN and DTLS take aiortc's path as before,
and so does everything when the native module is missing or older, when the installed aiortc is not the one this
was written against (:func:`media.aiortc_compat.receive_self_check`), or when ``COURTLINK_RECEIVE_PATH=aiortc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from aiortc import RTCPeerConnection

from media.aiortc_compat import RtpIntake, dtls_transports, install_rtp_intake, receive_self_check

try:
    from media import _fastpath
except ImportError:  # not built: aiortc's receive path
    _fastpath = None  # type: ignore[assignment]

log = structlog.get_logger(__name__)

RECEIVE_PATH_ENV = "COURTLINK_RECEIVE_PATH"
"""Set to ``aiortc`` to make the node receive through aiortc's own path even where the native one works (A/B)."""

_recv_rtp: Callable[..., Any] | None = getattr(_fastpath, "recv_rtp", None)
_vp8_depayload: Callable[[bytes], Any] | None = getattr(_fastpath, "vp8_depayload", None)
_recv_rtcp: Callable[..., Any] | None = getattr(_fastpath, "recv_rtcp", None)
_mismatch = receive_self_check()
_native = _recv_rtp is not None and _mismatch is None and os.environ.get(RECEIVE_PATH_ENV, "") != "aiortc"


def receive_path() -> str:
    """``native`` if connections set up from now on receive RTP through :class:`RtpIntake`, else ``aiortc``."""
    return "native" if _native else "aiortc"


def use_native(on: bool) -> None:
    """Choose the receive path of connections set up from now on (``on`` needs the module's ``recv_rtp`` and the
    aiortc this was written against; tests and the bench)."""
    global _native
    _native = on and _recv_rtp is not None and _mismatch is None


def drive(coroutine: Coroutine[Any, Any, None], resumed: Callable[[], None]) -> bool:
    """Run a receiver's packet handler now; True if it finished.

    It finishes at once unless it waits (a send of RTCP feedback that could not complete at once, e.g. on a relayed
    pair): then it goes on as a task, and ``resumed`` is called once it has finished.
    """
    try:
        waiting = coroutine.send(None)
    except StopIteration:
        return True
    except Exception:
        _failed()
        return True
    asyncio.get_running_loop().create_task(_resume(coroutine, waiting, resumed))
    return False


async def _resume(coroutine: Coroutine[Any, Any, None], waiting: Any, resumed: Callable[[], None]) -> None:
    try:
        while True:
            if waiting is None:
                await asyncio.sleep(0)  # a bare yield
            else:
                try:
                    with contextlib.suppress(Exception):  # the handler sees the outcome itself when it resumes
                        await waiting
                except asyncio.CancelledError:
                    if not (isinstance(waiting, asyncio.Future) and waiting.cancelled()):
                        raise  # this task was cancelled (the loop is closing)
            try:
                waiting = coroutine.send(None)
            except StopIteration:
                break
            except Exception:
                _failed()
                break
    finally:
        coroutine.close()
    resumed()


_failures = 0


def _failed() -> None:
    """A receiver's handler raised: aiortc's receive task would have ended the transport; log it (rarely) instead."""
    global _failures
    _failures += 1
    if _failures & (_failures - 1) == 0:  # 1, 2, 4, 8...: a fact, never one per packet
        log.exception("receive_handler_failed", failures=_failures)


_announced = False


def _announce() -> None:
    """Log, once per process, which receive path the first connection takes (and why not the native one)."""
    global _announced
    if not _announced:
        _announced = True
        log.info(
            "receive_path_selected",
            receive_path=receive_path(),
            native_built=_recv_rtp is not None,
            aiortc_mismatch=_mismatch,
        )


def install(pc: RTCPeerConnection) -> list[RtpIntake]:
    """Give every DTLS transport of ``pc`` the native receive path (idempotent; nothing when it is not selected).

    Call it once the transceivers exist (after applying a remote description); a transport added later by a
    renegotiation gets it at the next call.
    """
    _announce()
    if not _native or _recv_rtp is None:
        return []
    return [
        install_rtp_intake(dtls, _recv_rtp, drive, _vp8_depayload, _failed, _recv_rtcp) for dtls in dtls_transports(pc)
    ]
