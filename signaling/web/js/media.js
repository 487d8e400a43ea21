// The participant's one peer connection to the media node.
// The client offers its published tracks once admitted; the server offers whenever what the
// participant receives changes (the client answers). `tracks` says which mid carries whose source.

const ICE_GATHER_LIMIT_MS = 3000;

// The RTP header extensions the media node (aiortc) understands; the others would only cost header bytes.
// (The node keeps our payload types and extension ids when it re-offers, and numbers its own m-lines the
// same way, so our offers need no renumbering.)
const NODE_HEADER_EXTENSIONS = new Set([
  "urn:ietf:params:rtp-hdrext:sdes:mid",
  "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
  "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
]);

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
 * Events: "remote" (the set of received tracks changed), "state" (detail: connection state).
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

  /** Make sure a peer exists and sends exactly the allowed sources; renegotiate when that changed. */
  sync({ active, publish, iceServers }) {
    this.iceServers = iceServers || this.iceServers;
    if (!active) {
      this.close();
      return;
    }
    if (!this.pc) this.open();
    let changed = false;
    for (const source of ["microphone", "camera", "evidence"]) {
      const allowed = publish.includes(source) && !!this.local[source];
      const entry = this.senders[source];
      if (allowed && !entry) {
        const track = this.local[source];
        const stream = new MediaStream([track]);
        const transceiver = this.pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
        limitHeaderExtensions(transceiver);
        limitCodecs(transceiver, track.kind);
        this.senders[source] = { sender: transceiver.sender, transceiver, trackId: track.id };
        changed = true;
        this.declare(source);
      } else if (allowed && entry && entry.sender.track !== this.local[source]) {
        entry.sender.replaceTrack(this.local[source]).catch(() => {});
        this.declare(source);
      } else if (!allowed && entry && entry.sender.track) {
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
    const enabled = !!entry.sender.track && this.enabled[source];
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
    this.offered = false;
    pc.addEventListener("track", () => this.dispatchEvent(new Event("remote")));
    pc.addEventListener("connectionstatechange", () => {
      this.dispatchEvent(new CustomEvent("state", { detail: pc.connectionState }));
    });
    this.dispatchEvent(new CustomEvent("state", { detail: pc.connectionState }));
  }

  close() {
    if (!this.pc) return;
    this.pc.close();
    this.pc = null;
    this.senders = {};
    this.trackInfo = [];
    this.pendingOfferId = null;
    this.lastStats = null;
    this.dispatchEvent(new Event("remote"));
    this.dispatchEvent(new CustomEvent("state", { detail: "closed" }));
  }

  // Every SDP step runs in one chain so an incoming server offer never interleaves with our own offer.
  enqueue(step) {
    this.chain = this.chain.then(step).catch((error) => {
      console.warn("negotiation step failed", error);
    });
    return this.chain;
  }

  negotiate() {
    this.needOffer = true;
    this.enqueue(async () => {
      const pc = this.pc;
      if (!pc || !this.needOffer || pc.signalingState !== "stable") return;
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
      if (pc !== this.pc) return;
      this.pendingOfferId = this.signal.send({ type: "offer", sdp: pc.localDescription.sdp });
    });
  }

  onAnswer(message) {
    this.enqueue(async () => {
      const pc = this.pc;
      if (!pc || pc.signalingState !== "have-local-offer") return;
      await pc.setRemoteDescription({ type: "answer", sdp: message.sdp });
      this.pendingOfferId = null;
      this.dispatchEvent(new Event("remote"));
      if (this.needOffer) this.negotiate();
    });
  }

  onOffer(message) {
    // An offer before our own peer exists (the node may offer as soon as we are admitted): open one to answer it.
    if (!this.pc) this.open();
    this.enqueue(async () => {
      const pc = this.pc;
      if (!pc) return;
      if (pc.signalingState === "have-local-offer") {
        // Glare: the server's offer wins (we are the polite side); our own offer is sent again afterwards.
        await pc.setLocalDescription({ type: "rollback" });
        this.pendingOfferId = null;
        this.needOffer = true;
      }
      await pc.setRemoteDescription({ type: "offer", sdp: message.sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      await waitForIceGathering(pc);
      if (pc !== this.pc) return;
      this.signal.send({ type: "answer", sdp: pc.localDescription.sdp });
      this.dispatchEvent(new Event("remote"));
      if (this.needOffer) this.negotiate();
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

  /** A refused offer (e.g. the server was renegotiating itself): offer again shortly. */
  onOfferRefused() {
    this.enqueue(async () => {
      const pc = this.pc;
      if (pc && pc.signalingState === "have-local-offer") await pc.setLocalDescription({ type: "rollback" });
      this.pendingOfferId = null;
    });
    setTimeout(() => this.negotiate(), 500);
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
      out.push({
        mid: s.mid ?? null,
        kind: s.kind,
        participant_id: info ? info.participant_id : null,
        source: info ? info.source : null,
        bytesReceived: s.bytesReceived || 0,
        packetsReceived: s.packetsReceived || 0,
        framesDecoded: s.framesDecoded || 0,
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
        out.push({ mid: s.mid ?? null, kind: s.kind, bytesSent: s.bytesSent || 0, packetsSent: s.packetsSent || 0 });
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
