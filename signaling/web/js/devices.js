// Pre-join device check: camera preview, microphone level (WebAudio AnalyserNode), a speaker test tone,
// and the choice of camera and microphone.

export class Devices extends EventTarget {
  constructor() {
    super();
    this.stream = null;
    this.audioContext = null;
    this.analyser = null;
    this.meterSource = null;
    this.levelTimer = null;
    this.cameraId = "";
    this.microphoneId = "";
    this.speakerId = "";
    this.error = null;
    this.requests = 0; // getUserMedia calls made (diagnostics: an observer's page makes none)
  }

  get camera() {
    return this.stream ? this.stream.getVideoTracks()[0] || null : null;
  }

  get microphone() {
    return this.stream ? this.stream.getAudioTracks()[0] || null : null;
  }

  /** Ask for camera and microphone (each optional: a participant without a camera can still join). */
  async start() {
    this.error = null;
    const video = this.cameraId ? { deviceId: { exact: this.cameraId } } : { width: 640, height: 480 };
    const audio = this.microphoneId ? { deviceId: { exact: this.microphoneId } } : true;
    const tries = [{ video, audio }, { audio }, { video }];
    for (const constraints of tries) {
      this.requests += 1;
      try {
        const stream = await navigator.mediaDevices.getUserMedia(constraints);
        this.replaceStream(stream);
        return stream;
      } catch (error) {
        this.error = error;
      }
    }
    this.replaceStream(null);
    return null;
  }

  replaceStream(stream) {
    if (this.stream && this.stream !== stream) for (const t of this.stream.getTracks()) t.stop();
    this.stream = stream;
    if (this.camera) this.cameraId = this.camera.getSettings().deviceId || this.cameraId;
    if (this.microphone) this.microphoneId = this.microphone.getSettings().deviceId || this.microphoneId;
    this.attachMeter();
    this.dispatchEvent(new Event("change"));
  }

  /** Switch one device; keeps the other track as it is. */
  async choose(kind, deviceId) {
    if (kind === "audiooutput") {
      this.speakerId = deviceId;
      this.dispatchEvent(new Event("speaker"));
      return;
    }
    const constraints =
      kind === "videoinput" ? { video: { deviceId: { exact: deviceId } } } : { audio: { deviceId: { exact: deviceId } } };
    const fresh = await navigator.mediaDevices.getUserMedia(constraints);
    const keep = this.stream ? this.stream.getTracks().filter((t) => t.kind !== (kind === "videoinput" ? "video" : "audio")) : [];
    const old = this.stream ? this.stream.getTracks().filter((t) => !keep.includes(t)) : [];
    for (const t of old) t.stop();
    if (kind === "videoinput") this.cameraId = deviceId;
    else this.microphoneId = deviceId;
    this.stream = new MediaStream([...keep, ...fresh.getTracks()]);
    this.attachMeter();
    this.dispatchEvent(new Event("change"));
  }

  async list() {
    try {
      const all = await navigator.mediaDevices.enumerateDevices();
      return {
        videoinput: all.filter((d) => d.kind === "videoinput"),
        audioinput: all.filter((d) => d.kind === "audioinput"),
        audiooutput: all.filter((d) => d.kind === "audiooutput"),
      };
    } catch {
      return { videoinput: [], audioinput: [], audiooutput: [] };
    }
  }

  context() {
    if (!this.audioContext) this.audioContext = new AudioContext();
    // Created before a click the context starts suspended; every user action resumes it.
    if (this.audioContext.state === "suspended") this.audioContext.resume().catch(() => {});
    return this.audioContext;
  }

  attachMeter() {
    if (this.meterSource) {
      this.meterSource.disconnect();
      this.meterSource = null;
    }
    if (!this.microphone) return;
    const ctx = this.context();
    if (!this.analyser) {
      this.analyser = ctx.createAnalyser();
      this.analyser.fftSize = 512;
    }
    this.meterSource = ctx.createMediaStreamSource(new MediaStream([this.microphone]));
    this.meterSource.connect(this.analyser);
  }

  /** Microphone level 0..1 (RMS of the analyser's time-domain samples, scaled for display). */
  level() {
    if (!this.analyser || !this.microphone) return 0;
    const samples = new Float32Array(this.analyser.fftSize);
    this.analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const v of samples) sum += v * v;
    const rms = Math.sqrt(sum / samples.length);
    return Math.min(1, rms * 4);
  }

  /** A short generated tone (no audio file needed) through the chosen speaker when the browser allows it. */
  async playTone() {
    const ctx = this.context();
    await ctx.resume().catch(() => {});
    const oscillator = ctx.createOscillator();
    const gain = ctx.createGain();
    oscillator.type = "sine";
    oscillator.frequency.value = 660;
    const t0 = ctx.currentTime;
    gain.gain.setValueAtTime(0.0001, t0);
    gain.gain.exponentialRampToValueAtTime(0.3, t0 + 0.05);
    gain.gain.setValueAtTime(0.3, t0 + 0.6);
    gain.gain.exponentialRampToValueAtTime(0.0001, t0 + 0.9);
    oscillator.connect(gain);
    if (this.speakerId && typeof ctx.setSinkId === "function") await ctx.setSinkId(this.speakerId).catch(() => {});
    gain.connect(ctx.destination);
    oscillator.start(t0);
    oscillator.stop(t0 + 0.95);
    return new Promise((resolve) => {
      oscillator.onended = () => {
        gain.disconnect();
        resolve();
      };
    });
  }

  /** Round-trip time to the server (HTTP, before joining); media quality is measured on the real connection. */
  /**
   * The network check: a few seconds of WebRTC with the court's media node, which echoes the preview back
   * (POST /api/v1/join/probe). Round-trip time and sending/receiving bitrate come from getStats. Without
   * WebRTC (no preview, the check refused or not connecting) it falls back to timing /healthz.
   */
  async probeServer(token, seconds = 4) {
    if (token && window.RTCPeerConnection && this.stream && this.stream.getTracks().length) {
      try {
        const result = await this.probeMedia(token, seconds);
        if (result) {
          if (result.rtt === null) result.rtt = (await this.probeHttp()).rtt;
          return result;
        }
      } catch (error) {
        console.warn("media network check failed", error);
      }
    }
    return this.probeHttp();
  }

  async probeMedia(token, seconds) {
    const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: "max-bundle", rtcpMuxPolicy: "require" });
    try {
      for (const track of this.stream.getTracks()) {
        const transceiver = pc.addTransceiver(track, { direction: "sendrecv", streams: [this.stream] });
        preferForwardedCodec(transceiver, track.kind);
      }
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc, 3000);
      const response = await fetch("/api/v1/join/probe", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token, sdp: pc.localDescription.sdp }),
      });
      if (!response.ok) return null;
      const { sdp } = await response.json();
      await pc.setRemoteDescription({ type: "answer", sdp });
      if (!(await connected(pc, 5000))) return null;
      const before = byteCounts(await pc.getStats());
      await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
      const stats = await pc.getStats();
      const after = byteCounts(stats);
      const elapsed = (after.at - before.at) / 1000;
      if (elapsed <= 0) return null;
      const packets = after.got - before.got + (after.lost - before.lost);
      return {
        ok: true,
        media: true,
        rtt: roundTrip(stats),
        up: ((after.sent - before.sent) * 8) / elapsed / 1e6,
        down: ((after.received - before.received) * 8) / elapsed / 1e6,
        // Lost on the way out or back (the echo's inbound packets); null when nothing arrived to count.
        loss: packets > 0 ? (after.lost - before.lost) / packets : null,
        limited: after.limited,
      };
    } finally {
      pc.close();
    }
  }

  /** Median time of a few /healthz requests (the fallback network check). */
  async probeHttp(samples = 3) {
    const times = [];
    for (let i = 0; i < samples; i++) {
      const t0 = performance.now();
      try {
        const response = await fetch("/healthz", { cache: "no-store" });
        await response.arrayBuffer();
        if (!response.ok) return { ok: false, rtt: null };
      } catch {
        return { ok: false, rtt: null };
      }
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    return { ok: true, media: false, rtt: times[Math.floor(times.length / 2)] };
  }

  stop() {
    clearInterval(this.levelTimer);
    if (this.stream) for (const t of this.stream.getTracks()) t.stop();
    this.stream = null;
    if (this.audioContext) this.audioContext.close().catch(() => {});
    this.audioContext = null;
    this.analyser = null;
  }
}

/** Offer the codec the media node forwards first (Opus, VP8 with RTX), so the echo needs no transcoding. */
function preferForwardedCodec(transceiver, kind) {
  if (typeof transceiver.setCodecPreferences !== "function" || !window.RTCRtpSender?.getCapabilities) return;
  const wanted = kind === "audio" ? ["audio/opus"] : ["video/vp8", "video/rtx"];
  const codecs = RTCRtpSender.getCapabilities(kind).codecs.filter((c) => wanted.includes(c.mimeType.toLowerCase()));
  if (!codecs.some((c) => c.mimeType.toLowerCase() !== "video/rtx")) return;
  try {
    transceiver.setCodecPreferences(codecs);
  } catch (error) {
    console.warn("codec preferences not set", error);
  }
}

function gathered(pc, limitMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      pc.removeEventListener("icegatheringstatechange", check);
      clearTimeout(timer);
      resolve();
    };
    const check = () => pc.iceGatheringState === "complete" && done();
    const timer = setTimeout(done, limitMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

function connected(pc, limitMs) {
  if (pc.connectionState === "connected") return Promise.resolve(true);
  return new Promise((resolve) => {
    const finish = (value) => {
      pc.removeEventListener("connectionstatechange", check);
      clearTimeout(timer);
      resolve(value);
    };
    const check = () => {
      if (pc.connectionState === "connected") finish(true);
      else if (pc.connectionState === "failed" || pc.connectionState === "closed") finish(false);
    };
    const timer = setTimeout(() => finish(false), limitMs);
    pc.addEventListener("connectionstatechange", check);
  });
}

/** Bytes sent and received on RTP so far (payload and headers), and when. */
function byteCounts(stats) {
  let sent = 0;
  let received = 0;
  let at = performance.now();
  let got = 0;
  let lost = 0;
  let limited = false;
  stats.forEach((s) => {
    if (s.type === "outbound-rtp") sent += (s.bytesSent || 0) + (s.headerBytesSent || 0);
    if (s.type === "outbound-rtp" && s.qualityLimitationReason === "bandwidth") limited = true;
    if (s.type === "inbound-rtp") received += (s.bytesReceived || 0) + (s.headerBytesReceived || 0);
    if (s.type === "inbound-rtp") {
      got += s.packetsReceived || 0;
      lost += Math.max(0, s.packetsLost || 0);
    }
  });
  return { sent, received, at, got, lost, limited };
}

/** Round-trip time in ms: the selected ICE pair's, else RTCP's (remote-inbound-rtp); null if neither is known. */
function roundTrip(stats) {
  let pairRtt = null;
  const rtcp = [];
  stats.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) {
      const pair = stats.get(s.selectedCandidatePairId);
      if (pair && typeof pair.currentRoundTripTime === "number") pairRtt = pair.currentRoundTripTime;
    }
    if (pairRtt === null && s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
      if (typeof s.currentRoundTripTime === "number") pairRtt = s.currentRoundTripTime;
    }
    if (s.type === "remote-inbound-rtp" && typeof s.roundTripTime === "number") rtcp.push(s.roundTripTime);
  });
  if (pairRtt !== null) return pairRtt * 1000;
  if (rtcp.length) return (rtcp.reduce((a, b) => a + b, 0) / rtcp.length) * 1000;
  return null;
}
