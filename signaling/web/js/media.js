// The participant's one peer connection to the media node.
// The client offers its published tracks once admitted; the server offers whenever what the
// participant receives changes (the client answers). `tracks` says which mid carries whose source.
//
// Negotiation rules (docs/protocol.md, "Negotiation"): the node is the impolite peer, this client the
// polite one. A node offer that crosses our own rolls ours back; a refused offer (`renegotiation_pending`)
// is never retried on a timer — the server re-sends its pending offer, we answer it and only then offer
// again. Media restart: when the connection has been `disconnected` > 2 s, has `failed`, or an exchange
// has not completed in 10 s, we ask the server (`restart_media`); on `media_restart` (asked for or not)
// the peer connection is made anew with the same local tracks.

const ICE_GATHER_LIMIT_MS = 3000;
const DISCONNECTED_LIMIT_MS = 2000;
const NEGOTIATION_LIMIT_MS = 10000;
const RESTART_REPLY_LIMIT_MS = 10000;
const RESTART_BACKOFF_MS = [0, 1000, 2000, 4000, 8000];
const STABLE_AFTER_MS = 10000;
const MAX_REFUSALS = 3;
const SILENCE_CHECK_MS = 1000;
const SILENCE_LIMIT_MS = 3000;

// The RTP header extensions the media node (aiortc) understands; the others would only cost header bytes.
// (The node keeps our payload types and extension ids when it re-offers, and numbers its own m-lines the
// same way, so our offers need no renumbering.)
const NODE_HEADER_EXTENSIONS = new Set([
  "urn:ietf:params:rtp-hdrext:sdes:mid",
  "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
  "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
  // Name each simulcast layer (and its retransmissions); Chromium puts them only on simulcast streams.
  "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
  "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
]);

// The camera goes out in simulcast: quarter, half and full size, smallest first. The node forwards each
// subscriber the smallest layer big enough for its tile (and its link), and records the largest. Evidence stays
// one full-quality stream.
const CAMERA_LAYERS = [
  { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: "f", scaleResolutionDownBy: 1, maxBitrate: 1_200_000 },
];

/**
 * The layers to ask for a camera track. Chromium makes at most as many layers as the picture allows (3 from
 * 960x540, 2 from 480x270, else 1) and then keeps the SMALLEST ones: asked for three of a 640x480 camera, it
 * sends 160 and 320 pixels wide and never the full picture. So ask only for what it will make: the full layer
 * is always among them; too small a camera gets no simulcast.
 */
function cameraLayers(track) {
  const settings = typeof track.getSettings === "function" ? track.getSettings() : {};
  const pixels = (settings.width || 0) * (settings.height || 0);
  const count = pixels >= 960 * 540 ? 3 : pixels >= 480 * 270 ? 2 : 1;
  return count > 1 ? CAMERA_LAYERS.slice(CAMERA_LAYERS.length - count).map((layer) => ({ ...layer })) : null;
}

// How often the sizes of the shown videos are checked (a `view` message goes out only when they changed).
const VIEW_CHECK_MS = 1000;

/** Offer only what the node forwards: Opus for audio, VP8 (with RTX) for video. */
function limitCodecs(transceiver, kind) {
  if (typeof transceiver.setCodecPreferences !== "function" || !window.RTCRtpSender?.getCapabilities) return;
  const wanted = kind === "audio" ? ["audio/opus"] : ["video/vp8", "video/rtx"];
  const codecs = RTCRtpSender.getCapabilities(kind).codecs.filter((c) => wanted.includes(c.mimeType.toLowerCase()));
  if (codecs.some((c) => c.mimeType.toLowerCase() !== "video/rtx")) {
    try {
      transceiver.setCodecPreferences(codecs);
    } catch (error) {
      console.warn("codec preferences not set", error);
    }
  }
}

function limitHeaderExtensions(transceiver) {
  if (typeof transceiver.setHeaderExtensionsToNegotiate !== "function") return;
  try {
    const extensions = transceiver.getHeaderExtensionsToNegotiate().map((e) => ({
      ...e,
      direction: NODE_HEADER_EXTENSIONS.has(e.uri) || e.direction === "stopped" ? e.direction : "stopped",
    }));
    transceiver.setHeaderExtensionsToNegotiate(extensions);
  } catch (error) {
    console.warn("header extensions not limited", error);
  }
}

function waitForIceGathering(pc) {
  // Full-SDP exchange: the offer/answer carries every candidate, so the server needs no trickle.
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      pc.removeEventListener("icegatheringstatechange", check);
      clearTimeout(timer);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    const timer = setTimeout(done, ICE_GATHER_LIMIT_MS);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

/**
 * Events: "remote" (the set of received tracks changed), "state" (detail: the media health,
 * see `health`), "restart" (detail: {reason}) when a media restart is asked for or begins.
 */
export class MediaSession extends EventTarget {
  constructor(signal) {
    super();
    this.signal = signal;
    this.pc = null;
    this.iceServers = [];
    this.local = { camera: null, microphone: null, evidence: null };
    this.senders = {}; // source -> {sender, trackId (as in our SDP msid)}
    this.enabled = { camera: true, microphone: true, evidence: true };
    this.trackInfo = []; // the last `tracks` message
    this.chain = Promise.resolve();
    this.pendingOfferId = null;
    this.needOffer = false;
    this.offered = false;
    this.lastStats = null;
    this.active = false;
    this.lastSync = null;
    this.lastAnsweredOffer = null;
    this.refusals = 0;
    this.everConnected = false;
    this.timers = { negotiation: null, disconnected: null, stable: null, restart: null, reply: null };
    this.restartId = null; // id of our `restart_media` while the server has not replied
    this.restartAttempts = 0;
    this.restarts = 0; // peers made anew in this session (diagnostics)
    this.lastHealth = "none";
    this.history = []; // the last media events, for diagnostics (window.courtlink.mediaLog())
    this.silent = false; // connected, but nothing at all received for SILENCE_LIMIT_MS
    this.silence = { timer: null, bytes: -1, changedAt: 0 };
    this.simulcast = true; // publish the camera in layers (window.courtlink may turn it off before joining)
    this.lastView = ""; // the last `view` message sent (JSON), so an unchanged layout sends nothing
    this.viewTimer = null;
  }

  /** Tell the node how big each received video is shown (`view`), when that changed: it picks the layer. */
  reportView() {
    if (!this.pc) return;
    const shown = new Map(); // track id -> [width, height] in device pixels, the largest element showing it
    const ratio = window.devicePixelRatio || 1;
    for (const video of document.querySelectorAll("video")) {
      const track = video.srcObject && video.srcObject.getVideoTracks ? video.srcObject.getVideoTracks()[0] : null;
      if (!track || video.hidden || !video.isConnected) continue;
      const width = Math.round(video.clientWidth * ratio);
      const height = Math.round(video.clientHeight * ratio);
      const [w, h] = shown.get(track.id) || [0, 0];
      if (width * height > w * h) shown.set(track.id, [width, height]);
    }
    const tiles = [];
    for (const remote of this.remoteTracks()) {
      if (remote.kind !== "video" || remote.mid == null) continue;
      const [width, height] = shown.get(remote.track.id) || [0, 0];
      tiles.push({ mid: String(remote.mid), width: Math.min(width, 16384), height: Math.min(height, 16384) });
    }
    tiles.sort((a, b) => a.mid.localeCompare(b.mid));
    const key = JSON.stringify(tiles.slice(0, 64));
    if (key === this.lastView || tiles.length === 0) return;
    this.lastView = key;
    this.viewCount = (this.viewCount || 0) + 1;
    this.signal.send({ type: "view", id: `view-${this.viewCount}`, tiles: tiles.slice(0, 64) });
  }

  note(event) {
    this.history.push({ at: Date.now(), event, connection: this.pc ? this.pc.connectionState : "closed" });
    if (this.history.length > 60) this.history.shift();
  }

  setLocalTrack(source, track) {
    this.local[source] = track;
    const entry = this.senders[source];
    if (entry && this.pc) entry.sender.replaceTrack(track).catch(() => {});
    if (track) track.enabled = this.enabled[source];
  }

  get connectionState() {
    return this.pc ? this.pc.connectionState : "closed";
  }

  /** Whether a restart is asked for, waiting for its backoff, or not yet answered by the server. */
  get restarting() {
    return this.timers.restart !== null || this.restartId !== null;
  }

  /**
   * The health of our own media as the page shows it: `none` (no media expected), `connecting` (never
   * connected yet), `connected`, or `reconnecting` (was connected, or a restart is under way).
   */
  get health() {
    if (!this.active) return "none";
    if (this.restarting) return "reconnecting";
    if (this.pc && this.pc.connectionState === "connected") return this.silent ? "reconnecting" : "connected";
    return this.everConnected ? "reconnecting" : "connecting";
  }

  emitHealth() {
    const health = this.health;
    this.lastHealth = health;
    this.dispatchEvent(new CustomEvent("state", { detail: health }));
  }

  clearTimer(name) {
    clearTimeout(this.timers[name]);
    this.timers[name] = null;
  }

  /** Make sure a peer exists and sends exactly the allowed sources; renegotiate when that changed. */
  sync({ active, publish, iceServers }) {
    this.iceServers = iceServers || this.iceServers;
    this.lastSync = { active, publish, iceServers: this.iceServers };
    if (!active) {
      this.active = false;
      this.everConnected = false;
      this.restartAttempts = 0;
      this.clearTimer("restart");
      this.clearTimer("reply");
      this.restartId = null;
      this.close();
      return;
    }
    this.active = true;
    if (!this.pc) this.open();
    let changed = false;
    for (const source of ["microphone", "camera", "evidence"]) {
      const allowed = publish.includes(source) && !!this.local[source];
      const entry = this.senders[source];
      if (allowed && !entry) {
        const track = this.local[source];
        const stream = new MediaStream([track]);
        const init = { direction: "sendonly", streams: [stream] };
        const layers = source === "camera" && this.simulcast ? cameraLayers(track) : null;
        if (layers) init.sendEncodings = layers;
        const transceiver = this.pc.addTransceiver(track, init);
        limitHeaderExtensions(transceiver);
        limitCodecs(transceiver, track.kind);
        // `track`: what we last gave the sender (sender.track follows replaceTrack only asynchronously).
        this.senders[source] = { sender: transceiver.sender, transceiver, trackId: track.id, track };
        changed = true;
        this.declare(source);
      } else if (allowed && entry && entry.track !== this.local[source]) {
        entry.track = this.local[source];
        entry.sender.replaceTrack(this.local[source]).catch(() => {});
        this.declare(source);
      } else if (!allowed && entry && entry.track) {
        entry.track = null;
        entry.sender.replaceTrack(null).catch(() => {});
        this.signal.send({ type: "publish", source, enabled: false, track_id: entry.trackId });
      }
    }
    // The client always makes the first offer of a peer (the node offers only after answering it).
    if (changed || !this.offered) this.negotiate();
  }

  /** Tell the server which of our tracks carries which source (publish {source, enabled, track_id}). */
  declare(source) {
    const entry = this.senders[source];
    if (!entry) return;
    // Not sender.track: right after replaceTrack it still names the previous track (or null), and an evidence
    // display shown again would be declared stopped, so the node would never forward it again.
    const enabled = !!entry.track && this.enabled[source];
    this.signal.send({ type: "publish", source, enabled, track_id: entry.trackId });
  }

  setEnabled(source, enabled) {
    this.enabled[source] = enabled;
    if (this.local[source]) this.local[source].enabled = enabled;
  }

  open() {
    const iceServers = (this.iceServers || []).map((s) => {
      const server = { urls: s.urls };
      if (s.username) server.username = s.username;
      if (s.credential) server.credential = s.credential;
      return server;
    });
    const pc = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle", rtcpMuxPolicy: "require" });
    this.pc = pc;
    this.senders = {};
    this.chain = Promise.resolve();
    this.pendingOfferId = null;
    this.needOffer = false;
    this.offered = false;
    this.lastAnsweredOffer = null;
    this.refusals = 0;
    pc.addEventListener("track", () => this.dispatchEvent(new Event("remote")));
    this.lastView = "";
    clearInterval(this.viewTimer);
    this.viewTimer = setInterval(() => this.reportView(), VIEW_CHECK_MS);
    pc.addEventListener("connectionstatechange", () => {
      if (pc === this.pc) this.onConnectionState(pc.connectionState);
    });
    this.emitHealth();
  }

  /** A new signaling session (rejoin): the server made a fresh peer, so forget restarts in flight too. */
  reset() {
    this.restartId = null;
    this.clearTimer("reply");
    this.clearTimer("restart");
    this.close();
  }

  /** Close the peer connection (its tracks stay ours: a restart re-adds them to the next one). */
  close() {
    for (const name of ["negotiation", "disconnected", "stable"]) this.clearTimer(name);
    this.stopSilenceWatch();
    if (!this.pc) {
      this.emitHealth();
      return;
    }
    this.pc.close();
    this.pc = null;
    clearInterval(this.viewTimer);
    this.viewTimer = null;
    this.senders = {};
    this.trackInfo = [];
    this.pendingOfferId = null;
    this.needOffer = false;
    this.lastStats = null;
    this.dispatchEvent(new Event("remote"));
    this.emitHealth();
  }

  onConnectionState(state) {
    this.note(`connection ${state}`);
    if (state === "connected") this.watchSilence();
    else this.stopSilenceWatch();
    if (state === "connected") {
      this.everConnected = true;
      this.clearTimer("disconnected");
      if (!this.needOffer && !this.pendingOfferId) this.clearTimer("negotiation");
      // Ten calm seconds connected reset the restart backoff.
      if (!this.timers.stable) {
        this.timers.stable = setTimeout(() => {
          this.timers.stable = null;
          this.restartAttempts = 0;
        }, STABLE_AFTER_MS);
      }
    } else {
      this.clearTimer("stable");
    }
    if (state === "disconnected" && !this.timers.disconnected) {
      this.timers.disconnected = setTimeout(() => {
        this.timers.disconnected = null;
        if (this.pc && this.pc.connectionState === "disconnected") this.requestRestart("disconnected");
      }, DISCONNECTED_LIMIT_MS);
    }
    if (state === "failed") this.requestRestart("failed");
    this.emitHealth();
  }

  /**
   * The browser notices a dead network only after several seconds of failed consent checks; meanwhile the
   * page would say "Connected" with nothing arriving. Once a second, read how many bytes the transport
   * received (media, RTCP and STUN alike): none for 3 s counts as dead media until bytes arrive again.
   */
  watchSilence() {
    if (this.silence.timer) return;
    const pc = this.pc;
    this.silence.bytes = -1;
    this.silence.changedAt = Date.now();
    this.silence.timer = setInterval(async () => {
      if (pc !== this.pc || pc.connectionState !== "connected") return;
      let bytes = 0;
      try {
        (await pc.getStats()).forEach((s) => {
          if (s.type === "transport") bytes += s.bytesReceived || 0;
        });
      } catch {
        return;
      }
      const now = Date.now();
      if (bytes !== this.silence.bytes) {
        this.silence.bytes = bytes;
        this.silence.changedAt = now;
      }
      const silent = now - this.silence.changedAt > SILENCE_LIMIT_MS;
      if (silent !== this.silent) {
        this.silent = silent;
        this.note(silent ? "nothing received" : "receiving again");
        this.emitHealth();
      }
    }, SILENCE_CHECK_MS);
  }

  stopSilenceWatch() {
    clearInterval(this.silence.timer);
    this.silence.timer = null;
    if (this.silent) {
      this.silent = false;
      this.emitHealth();
    }
  }

  // Every SDP step runs in one chain so an incoming server offer never interleaves with our own offer.
  // A step belongs to the peer connection of its time: after a restart it does nothing (an offer of the
  // replaced peer must never be applied to the new one).
  enqueue(step) {
    const pc = this.pc;
    this.chain = this.chain
      .then(() => (pc && pc === this.pc ? step(pc) : undefined))
      .catch((error) => {
        console.warn("negotiation step failed", error);
      });
    return this.chain;
  }

  /** Watch one exchange: unless it completes (and the connection comes up) in 10 s, restart media. */
  watchNegotiation() {
    if (this.timers.negotiation) return;
    const pc = this.pc;
    this.timers.negotiation = setTimeout(() => {
      this.timers.negotiation = null;
      if (pc === this.pc && this.active) this.requestRestart("negotiation_timeout");
    }, NEGOTIATION_LIMIT_MS);
  }

  /** The exchange we were waiting for is complete; unless connected, give the connection 10 s to come up. */
  negotiationDone() {
    if (this.needOffer || this.pendingOfferId) return;
    this.clearTimer("negotiation");
    if (this.pc && this.pc.connectionState !== "connected") this.watchNegotiation();
  }

  negotiate() {
    this.needOffer = true;
    this.watchNegotiation();
    this.enqueue((pc) => this.offerStep(pc));
  }

  async offerStep(pc) {
    // One offer of ours in flight at most; a refused or rolled-back one is offered again only after the
    // node's offer has been answered (see onOffer).
    if (!pc || !this.needOffer || this.pendingOfferId || pc.signalingState !== "stable") return;
    this.needOffer = false;
    if (!pc.getTransceivers().length) {
      // Nothing to send (an observer): the client still offers first, so offer to receive; the node then
      // offers what we receive on m-lines of its own.
      for (const kind of ["audio", "video"]) {
        const transceiver = pc.addTransceiver(kind, { direction: "recvonly" });
        limitHeaderExtensions(transceiver);
        limitCodecs(transceiver, kind);
      }
    }
    this.offered = true;
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await waitForIceGathering(pc);
    if (pc !== this.pc || pc.signalingState !== "have-local-offer") return;
    const id = this.signal.send({ type: "offer", sdp: pc.localDescription.sdp });
    if (id === null) {
      // Not connected: a rejoin makes a fresh peer and offers anew.
      await pc.setLocalDescription({ type: "rollback" });
      this.needOffer = true;
      return;
    }
    this.pendingOfferId = id;
    this.note("offer sent");
  }

  onAnswer(message) {
    this.enqueue(async (pc) => {
      if (pc.signalingState !== "have-local-offer" || (message.ref && message.ref !== this.pendingOfferId)) return;
      await pc.setRemoteDescription({ type: "answer", sdp: message.sdp });
      this.note("answer applied");
      this.pendingOfferId = null;
      this.refusals = 0;
      this.dispatchEvent(new Event("remote"));
      if (this.needOffer) this.negotiate();
      else this.negotiationDone();
    });
  }

  onOffer(message) {
    // The node only offers on a peer we already offered on; without a peer there is nothing to answer.
    if (!this.pc) return;
    this.enqueue(async (pc) => {
      // The server re-sends its pending offer when it refuses ours; an offer we already answered is not
      // answered twice (a second answer could land on the node's next offer).
      if (message.sdp === this.lastAnsweredOffer && pc.signalingState === "stable") {
        this.note("node offer already answered");
        return;
      }
      if (pc.signalingState === "have-local-offer") {
        // Glare: the node's offer wins (we are the polite side); ours is offered again after we answer.
        await pc.setLocalDescription({ type: "rollback" });
        this.note("own offer rolled back");
        this.pendingOfferId = null;
        this.needOffer = true;
      }
      await pc.setRemoteDescription({ type: "offer", sdp: message.sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      await waitForIceGathering(pc);
      if (pc !== this.pc) return;
      this.lastAnsweredOffer = message.sdp;
      this.signal.send({ type: "answer", sdp: pc.localDescription.sdp });
      this.note("node offer answered");
      this.dispatchEvent(new Event("remote"));
      if (this.needOffer) this.negotiate();
      else this.negotiationDone();
    });
  }

  onCandidate(message) {
    if (!this.pc || !message.candidate) return;
    const init = { candidate: message.candidate };
    if (message.sdpMid != null) init.sdpMid = message.sdpMid;
    if (message.sdpMLineIndex != null) init.sdpMLineIndex = message.sdpMLineIndex;
    if (init.sdpMid == null && init.sdpMLineIndex == null) init.sdpMLineIndex = 0;
    this.pc.addIceCandidate(init).catch(() => {});
  }

  /**
   * The server refused our offer. `renegotiation_pending`: the node's own offer crossed ours and the server
   * re-sends it; we roll back and wait for it (no timer), and offer again after answering it. Three
   * refusals in a row without an answer in between: ask for a media restart instead.
   */
  onOfferRefused(code) {
    this.note(`offer refused: ${code}`);
    this.refusals += 1;
    const refusals = this.refusals;
    this.enqueue(async (pc) => {
      if (pc.signalingState === "have-local-offer") await pc.setLocalDescription({ type: "rollback" });
      this.pendingOfferId = null;
      if (code === "renegotiation_pending") this.needOffer = true;
      if (refusals >= MAX_REFUSALS || code === "no_such_peer") this.requestRestart(code);
    });
  }

  // --- media restart ---------------------------------------------------------------------------

  /** Ask the server for a new peer (after a backoff: 0, 1, 2, 4, then 8 s); one request in flight at most. */
  requestRestart(reason) {
    if (!this.active || this.restarting) return;
    this.note(`restart requested: ${reason}`);
    const delay = RESTART_BACKOFF_MS[Math.min(this.restartAttempts, RESTART_BACKOFF_MS.length - 1)];
    this.restartAttempts += 1;
    this.dispatchEvent(new CustomEvent("restart", { detail: { reason } }));
    this.timers.restart = setTimeout(() => {
      this.timers.restart = null;
      if (!this.active) return;
      const id = this.signal.send({ type: "restart_media", reason: String(reason).slice(0, 64) });
      if (id === null) {
        // No signaling now; the rejoin makes a fresh peer anyway.
        this.emitHealth();
        return;
      }
      this.restartId = id;
      // The server replies with `media_restart` (or an error); if neither comes, ask again.
      this.timers.reply = setTimeout(() => {
        this.timers.reply = null;
        if (this.restartId !== id) return;
        this.restartId = null;
        this.requestRestart("restart_unanswered");
      }, RESTART_REPLY_LIMIT_MS);
      this.emitHealth();
    }, delay);
    this.emitHealth();
  }

  /** The server refused our `restart_media`. */
  onRestartRefused(code) {
    this.note(`restart refused: ${code}`);
    if (code === "restart_pending") return; // one is under way on the server: its `media_restart` follows
    this.restartId = null;
    this.clearTimer("reply");
    if (code === "too_many_restarts") this.requestRestart(code);
    else this.emitHealth();
  }

  /** `media_restart`: close the peer connection, make a new one with the same tracks, offer afresh. */
  onMediaRestart() {
    this.restartId = null;
    this.clearTimer("reply");
    this.clearTimer("restart");
    if (!this.active || !this.lastSync) return;
    this.note("media_restart");
    this.restarts += 1;
    this.dispatchEvent(new CustomEvent("restart", { detail: { reason: "server" } }));
    this.close();
    this.sync(this.lastSync);
  }

  /** Whether an error reply refers to our offer or our restart request (and handle it). */
  onError(message) {
    if (!message.ref) return false;
    if (message.ref === this.pendingOfferId) {
      this.onOfferRefused(message.code);
      return true;
    }
    if (message.ref === this.restartId) {
      this.onRestartRefused(message.code);
      return true;
    }
    if (typeof message.ref === "string" && message.ref.startsWith("view-")) {
      // A `view` the node could not take (its peer was just replaced): a new peer sends its own views.
      return true;
    }
    return false;
  }

  onTracks(message) {
    this.trackInfo = Array.isArray(message.tracks) ? message.tracks : [];
    this.dispatchEvent(new Event("remote"));
  }

  /** Which participant and source a received track (by mid or track id) carries. */
  infoFor(mid, trackId) {
    return (
      this.trackInfo.find((t) => t.mid != null && t.mid === mid) ||
      this.trackInfo.find((t) => t.track_id && t.track_id === trackId) ||
      null
    );
  }

  /** Received tracks: [{participant_id, source, kind, track}] for every live receiver the server named. */
  remoteTracks() {
    if (!this.pc) return [];
    const out = [];
    for (const transceiver of this.pc.getTransceivers()) {
      if (transceiver.stopped || transceiver.currentDirection === "stopped") continue;
      const dir = transceiver.currentDirection;
      if (dir !== "recvonly" && dir !== "sendrecv") continue;
      const track = transceiver.receiver.track;
      const info = this.infoFor(transceiver.mid, track.id);
      if (!info) continue;
      out.push({ participant_id: info.participant_id, source: info.source, kind: track.kind, track, mid: transceiver.mid });
    }
    return out;
  }

  /** Per received RTP stream: bytes, frames, and whose source it is (also what the tests read). */
  async inbound() {
    if (!this.pc) return [];
    const report = await this.pc.getStats();
    const out = [];
    report.forEach((s) => {
      if (s.type !== "inbound-rtp") return;
      const info = this.infoFor(s.mid, s.trackIdentifier);
      // The sender's RTCP sender reports, as the browser counted them (remote-outbound-rtp exists after the first).
      const remote = s.remoteId ? report.get(s.remoteId) : undefined;
      out.push({
        mid: s.mid ?? null,
        kind: s.kind,
        participant_id: info ? info.participant_id : null,
        source: info ? info.source : null,
        bytesReceived: s.bytesReceived || 0,
        packetsReceived: s.packetsReceived || 0,
        framesDecoded: s.framesDecoded || 0,
        frameWidth: s.frameWidth || 0,
        frameHeight: s.frameHeight || 0,
        // Diagnostics of a thin link: what was lost, asked again, given up.
        packetsLost: s.packetsLost || 0,
        nackCount: s.nackCount || 0,
        pliCount: s.pliCount || 0,
        keyFramesDecoded: s.keyFramesDecoded || 0,
        framesDropped: s.framesDropped || 0,
        freezeCount: s.freezeCount || 0,
        // Audio: what the jitter buffer had to make up for lost or late packets.
        totalSamplesReceived: s.totalSamplesReceived || 0,
        concealedSamples: s.concealedSamples || 0,
        silentConcealedSamples: s.silentConcealedSamples || 0,
        concealmentEvents: s.concealmentEvents || 0,
        senderReports: remote ? remote.reportsSent || 0 : 0,
      });
    });
    return out;
  }

  /** Per sent RTP stream: bytes and packets (diagnostics). */
  async outbound() {
    if (!this.pc) return [];
    const report = await this.pc.getStats();
    const out = [];
    report.forEach((s) => {
      if (s.type === "outbound-rtp") {
        // What the node's receiver reports of this stream (RTCP receiver reports): the loss on the way up.
        const remote = s.remoteId ? report.get(s.remoteId) : undefined;
        out.push({
          mid: s.mid ?? null,
          kind: s.kind,
          rid: s.rid ?? null,
          bytesSent: s.bytesSent || 0,
          packetsSent: s.packetsSent || 0,
          framesEncoded: s.framesEncoded || 0,
          frameWidth: s.frameWidth || 0,
          remotePacketsLost: remote ? remote.packetsLost || 0 : null,
          remoteFractionLost: remote ? remote.fractionLost ?? null : null,
        });
      }
    });
    return out;
  }

  /** Round-trip time and bitrates of the real connection, from getStats deltas. */
  async quality() {
    if (!this.pc) return null;
    const report = await this.pc.getStats();
    let rtt = null;
    let sent = 0;
    let received = 0;
    report.forEach((s) => {
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded" && s.currentRoundTripTime != null) {
        rtt = s.currentRoundTripTime;
      }
      if (s.type === "outbound-rtp") sent += s.bytesSent || 0;
      if (s.type === "inbound-rtp") received += s.bytesReceived || 0;
    });
    const now = performance.now();
    const previous = this.lastStats;
    this.lastStats = { now, sent, received };
    if (!previous) return { rtt, up: null, down: null };
    const seconds = (now - previous.now) / 1000;
    if (seconds <= 0) return { rtt, up: null, down: null };
    return {
      rtt,
      up: ((sent - previous.sent) * 8) / seconds,
      down: ((received - previous.received) * 8) / seconds,
    };
  }
}
