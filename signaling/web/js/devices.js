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
  async probeServer(samples = 3) {
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
    return { ok: true, rtt: times[Math.floor(times.length / 2)] };
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
