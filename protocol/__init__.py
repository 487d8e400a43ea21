"""Every wire contract of courtlink, apart from the services that speak them.

- :mod:`protocol.client`: client <-> signaling (the WebSocket messages and ws.json);
- :mod:`protocol.node`: signaling <-> media node (node-control commands, replies, events);
- :mod:`protocol.frames`: media node -> recorder (encoded frames, sender reports);
- :mod:`protocol.directory`: the directory records signaling serves but other services own (recordings,
  recorder keys, media nodes).

The modules hold data shapes and their (de)serialization only: pydantic models and plain dataclasses, no I/O.
Services depend on ``protocol`` and on the domain in ``rooms``; ``protocol`` depends only on ``rooms``.
"""
