"""courtlink media package."""


class AiortcMismatch(RuntimeError):
    """The installed aiortc/aioice lack an internal the media node relies on; the node must not start.

    Raised by :func:`media.aiortc_compat.self_check` (and on importing that module, if a name it imports is
    gone), with one line naming the missing piece and the versions found. Defined here, free of aiortc
    imports, so the CLI can catch it without loading the media stack.
    """
