"""courtlink recorder: archives every hearing as hash-chained, signed, remuxed segments.

- :mod:`recorder.recorder`: :class:`~recorder.recorder.Recorder`, the media node's
  ``FrameSink``; ``start_session`` gives a ``RecordingSession`` with ``pause``,
  ``resume``, ``record_audit``, ``stop``, ``seal``. All file work runs on one
  writer thread behind a bounded queue.
- :mod:`recorder.chain`: the format's primitives (canonical JSON, line hashes, seal message), standalone.
- :mod:`recorder.trust`: which public keys a verifier trusts (key files, the keys API's JSON), standalone.
- :mod:`recorder.recovery`: after a crash, seal the crashed session as ``interrupted``.
- :mod:`recorder.manifest`: the JSON Lines manifest and its chain.
- :mod:`recorder.segments`: PyAV remux into WebM/Matroska, hashed as written.
- :mod:`recorder.keys`: Ed25519 signing keys (``public_keys`` for ``/api/v1/recorder/keys``).
- :mod:`recorder.verify`: ``verify_archive`` (valid / unsealed / invalid / unusable), with
  :mod:`recorder.hearing_chain` (``verify_hearing``) and :mod:`recorder.verdict` (the results):
  standalone (standard library and ``cryptography`` only; see ``docs/archive.md``).
- :mod:`recorder.archive`: ``list_recordings`` for ``GET /api/v1/hearings/{id}/recordings``.
- :mod:`recorder.render`: ``render_archive``, composite H.264/AAC playback (the only decoder).
- :mod:`recorder.cli`: ``verify_main``, ``render_main`` and ``keys_main`` for ``courtlink verify|render|recorder keys``.

Layout: ``<data_dir>/recordings/<hearing_id>/<recorder_id>/<session_id>/manifest.jsonl``
and ``.../segments/<track>/<seq>.webm`` (``.mkv`` for H.264); keys in
``<data_dir>/recorder/keys/<recorder_id>.ed25519.pem`` (0600).
"""
