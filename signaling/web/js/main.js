// courtlink web client: pre-join device check, waiting rooms, the hearing view and the judge's console.
// Plain JavaScript modules, no build step; everything is served by signaling itself.

import { $, fillIcons, h, icon } from "./dom.js";
import { Devices } from "./devices.js";
import { formatElapsed } from "./elapsed.js";
import { I18n, pickLanguage } from "./i18n.js";
import { MediaSession } from "./media.js";
import { MediaAlerts, mediaHealth, renderConsole } from "./console.js";
import { renderHand, tickBench, toggleHand } from "./bench.js";
import { Signal } from "./signal.js";
import { confirmDialog } from "./confirm.js";
import { keepFocus } from "./focus.js";
import { verdict } from "./netcheck.js";
import { byWhom, reasonCode, reasonText } from "./reasons.js";

const IN_ROOM = new Set(["courtroom", "consultation"]);
const REPEATED_CLOSE_REASONS = new Set(["removed", "denied", "joined_elsewhere", "left"]);
const WAITING = new Set(["lobby", "witness_lobby"]);
// The public gallery: people of these roles only watch and listen (never asked for devices, never a tile).
const AUDIENCE_ROLES = new Set(["observer"]);

/** A participant's or roster entry's site as people name it: `site_name`, else the id (an older server). */
function siteName(p) {
  return (p && (p.site_name || p.site)) || "";
}

/** The payload of the join token, decoded for display only (the server verifies it). */
function decodeToken(token) {
  try {
    const part = token.split(".")[1];
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

class App {
  constructor() {
    this.i18n = new I18n();
    this.devices = new Devices();
    this.token = new URLSearchParams(location.search).get("t") || "";
    this.claims = this.token ? decodeToken(this.token) : null;
    this.signal = new Signal(this.token);
    this.media = new MediaSession(this.signal);
    this.view = "loading";
    this.me = null;
    this.info = null;
    this.hearing = null;
    this.placement = null;
    this.consultation = null;
    this.permissions = { publish: [], actions: [], receives: false };
    this.iceServers = [];
    this.roster = [];
    this.recording = null;
    this.speaker = null;
    this.selfMuted = { microphone: false, camera: false };
    this.sharing = null;
    this.everConnected = false;
    this.qualityTimer = null;
    this.meterTimer = null;
    this.ended = null;
    this.tiles = new Map();
    this.audios = new Map();
    this.alerts = new MediaAlerts(this);
    this.mediaHealth = "none";
    this.galleryOpen = false;
    this.clockTimer = null;
  }

  /** An observer: watches and listens only (role from the link before joining, from `joined` after). */
  get audience() {
    const role = this.me ? this.me.role : this.claims ? this.claims.role : null;
    return AUDIENCE_ROLES.has(role);
  }

  /** My own roster entry, if the roster lists me. */
  ownEntry() {
    return this.me ? this.roster.find((p) => p.id === this.me.id) || null : null;
  }

  /** Whether the court muted this source of mine (and I may not lift it myself). */
  courtMuted(source) {
    const mine = this.ownEntry();
    if (!mine || !(mine.muted_by_court || []).includes(source)) return false;
    // A clerk or the presiding judge (session_control) may lift a mute of their own (rooms.permissions).
    const actions = this.permissions.actions || [];
    const mayLift = actions.includes("mute_others") && (this.me.role === "clerk" || actions.includes("session_control"));
    return !mayLift;
  }

  t(key, params) {
    return this.i18n.t(key, params);
  }

  async start() {
    fillIcons();
    await this.i18n.use(pickLanguage());
    this.i18n.addEventListener("change", () => this.render());
    $("lang-toggle").addEventListener("click", () =>
      this.i18n.use(this.i18n.lang === "en" ? "zh-CN" : "en", { remember: true }),
    );
    this.bindSignal();
    this.bindMedia();
    this.bindControls();
    if (!this.token || !this.claims) {
      this.end("bad_link");
      return;
    }
    document.body.dataset.audience = this.audience ? "1" : "0";
    this.show("prejoin");
    this.render();
    // The bench's clock and the elapsed times tick once a second, in place (nothing is re-rendered).
    this.clockTimer = setInterval(() => this.tickElapsed(), 1000);
    // An observer is never asked for a camera or microphone: no getUserMedia at all.
    await Promise.all([this.loadJoinInfo(), this.audience ? null : this.startDevices()]);
  }

  /** Who and what this link is for (name, site, case number), shown before joining. */
  async loadJoinInfo() {
    try {
      const response = await fetch("/api/v1/join/info", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token: this.token }),
        cache: "no-store",
      });
      const body = await response.json();
      if (response.status === 401) {
        // The problem's code (urn:courtlink:problem:<code>) is translated; its English detail is not shown.
        const code = String(body.type || "").replace(/^urn:courtlink:problem:/, "");
        this.end("bad_link", code || body.detail || "");
        return;
      }
      if (response.ok) {
        this.info = body;
        this.render();
      }
    } catch {
      // Offline or the server is down: the page still works; the names come with `joined`.
    }
  }

  // --- views -------------------------------------------------------------------------------

  show(view) {
    this.view = view;
    document.body.dataset.view = view;
    const active = document.activeElement;
    const dialog = $("confirm-dialog");
    const lost =
      !!active &&
      active !== document.body &&
      (!!active.closest(`.view:not(#view-${view})`) || (!!active.closest("#confirm-dialog") && !dialog.open));
    for (const name of ["loading", "prejoin", "lobby", "hearing", "ended"]) $(`view-${name}`).hidden = name !== view;
    if (lost && !dialog.open) {
      // Focus never falls to the page body: it goes to the heading of the view that is shown now.
      const heading = $(`view-${view}`).querySelector("h1");
      if (heading) {
        if (!heading.hasAttribute("tabindex")) heading.setAttribute("tabindex", "-1");
        heading.focus({ preventScroll: true });
      }
    }
    if (view !== "prejoin") clearInterval(this.meterTimer);
    this.render();
  }

  announce(text) {
    const live = $("live");
    live.textContent = "";
    // A fresh text node makes screen readers read the message even when it repeats.
    setTimeout(() => {
      live.textContent = text;
    }, 50);
  }

  toast(text, kind = "info") {
    const el = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" }, text);
    $("toasts").append(el);
    setTimeout(() => el.remove(), 6000);
  }

  end(reason, detail = "", { by = null, closed = false } = {}) {
    this.ended = { reason, detail, by, closed };
    // A question asked before the end (Leave?) has no answer any more.
    if ($("confirm-dialog").open) $("confirm-dialog").close();
    clearInterval(this.qualityTimer);
    clearInterval(this.clockTimer);
    this.alerts.stop();
    this.signal.stop();
    this.media.close();
    this.devices.stop();
    if (this.sharing) this.sharing.stop();
    for (const audio of this.audios.values()) audio.remove();
    this.audios.clear();
    this.show("ended");
  }

  // --- pre-join ----------------------------------------------------------------------------

  async startDevices() {
    const stream = await this.devices.start();
    this.attachPreviews();
    await this.fillDeviceSelects();
    if (!stream) {
      const error = $("pj-device-error");
      error.hidden = false;
      error.dataset.key = "prejoin.device_error";
      error.textContent = this.t("prejoin.device_error");
    }
    clearInterval(this.meterTimer);
    this.meterTimer = setInterval(() => {
      const level = Math.round(this.devices.level() * 100);
      const meter = $("pj-meter");
      meter.setAttribute("aria-valuenow", String(level));
      meter.firstElementChild.style.width = `${level}%`;
    }, 100);
  }

  attachPreviews() {
    const camera = this.devices.camera;
    const stream = camera ? new MediaStream([camera]) : null;
    for (const id of ["pj-preview", "lobby-preview"]) {
      const video = $(id);
      if (video.srcObject !== stream) video.srcObject = stream;
    }
    $("pj-nocam").hidden = !!camera;
  }

  async fillDeviceSelects() {
    const lists = await this.devices.list();
    const fill = (id, devices, current, kind) => {
      const select = $(id);
      select.replaceChildren(
        ...devices.map((d, i) =>
          h("option", { value: d.deviceId, selected: d.deviceId === current }, d.label || this.t(`prejoin.${kind}_n`, { n: i + 1 })),
        ),
      );
      select.disabled = devices.length === 0;
    };
    fill("pj-camera", lists.videoinput, this.devices.cameraId, "camera");
    fill("pj-mic", lists.audioinput, this.devices.microphoneId, "microphone");
    fill("pj-speaker", lists.audiooutput, this.devices.speakerId, "speaker");
  }

  async chooseDevice(kind, deviceId) {
    try {
      await this.devices.choose(kind, deviceId);
    } catch {
      this.toast(this.t("prejoin.device_error"), "error");
      return;
    }
    this.attachPreviews();
    if (kind === "audiooutput") {
      for (const audio of this.audios.values()) if (audio.setSinkId) audio.setSinkId(deviceId).catch(() => {});
      return;
    }
    this.syncMedia();
  }

  async testNetwork() {
    const out = $("pj-network-result");
    const button = $("pj-network");
    button.disabled = true;
    out.textContent = this.t("prejoin.network_testing");
    try {
      const result = await this.devices.probeServer(this.token);
      out.dataset.rtt = result.rtt === null || result.rtt === undefined ? "" : String(Math.round(result.rtt));
      if (!result.ok) out.textContent = this.t("prejoin.network_failed");
      else if (result.media)
        out.textContent = this.t("prejoin.network_media", {
          rtt: result.rtt === null ? "?" : Math.round(result.rtt),
          up: result.up.toFixed(1),
          down: result.down.toFixed(1),
        });
      else out.textContent = this.t("prejoin.network_ok", { rtt: Math.round(result.rtt) });
      out.dataset.kind = result.ok ? (result.media ? "media" : "http") : "failed";
      this.showVerdict(result);
    } finally {
      button.disabled = false;
    }
  }

  /** The network check's verdict (good / okay / poor) above its figures, in words and as `data-verdict`. */
  showVerdict(result) {
    const judged = verdict(result);
    const el = $("pj-network-verdict");
    el.hidden = false;
    el.dataset.verdict = judged.verdict;
    el.dataset.grades = Object.entries(judged.grades)
      .map(([k, v]) => `${k}:${v}`)
      .join(" ");
    this.netVerdict = judged;
    this.renderVerdict();
  }

  renderVerdict() {
    const el = $("pj-network-verdict");
    if (!this.netVerdict || !el) return;
    const { verdict: v, grades } = this.netVerdict;
    const weak = Object.entries(grades)
      .filter(([, g]) => g !== "good")
      .map(([k]) => this.t(`netcheck.figure_${k}`));
    const hint = weak.length ? ` ${this.t("netcheck.weak", { figures: weak.join(this.t("list.separator")) })}` : "";
    el.textContent = `${this.t(`netcheck.${v}`)}${hint}`;
  }

  join() {
    $("pj-join").disabled = true;
    this.devices.context();
    this.signal.start();
  }

  // --- signaling ---------------------------------------------------------------------------

  bindSignal() {
    this.signal.addEventListener("status", (e) => this.onStatus(e.detail));
    this.signal.addEventListener("message", (e) => this.onMessage(e.detail));
    this.signal.addEventListener("final", (e) => {
      const reasons = { 4001: "bad_link", 4003: "not_allowed", 4009: "elsewhere", 4010: "removed" };
      if (this.view !== "ended") this.end(reasons[e.detail.code] || "closed", e.detail.reason || "", { closed: true });
    });
  }

  onStatus(status) {
    document.body.dataset.conn = status;
    const banner = $("banner");
    if (status === "reconnecting" || status === "offline") {
      banner.hidden = false;
      banner.textContent = this.t(status === "offline" ? "conn.offline_banner" : "conn.reconnecting_banner");
    } else {
      banner.hidden = true;
    }
    if (status === "connected" && this.everConnected) this.announce(this.t("conn.reconnected"));
    if (status === "connected") this.everConnected = true;
    this.renderHeader();
  }

  onMessage(m) {
    switch (m.type) {
      case "joined":
        return this.onJoined(m);
      case "admitted":
        this.announce(this.t("lobby.admitted"));
        return this.setPlacement("courtroom", null, null);
      case "placement":
        return this.setPlacement(m.placement, m.consultation ?? null, m.permissions);
      case "denied":
        return this.end("denied", m.reason || "", { by: m });
      case "removed":
        return this.end("removed", m.reason || "", { by: m });
      case "roster":
        this.roster = m.participants || [];
        this.applyCourtMutes();
        this.alerts.update();
        return this.render();
      case "state":
        return this.onState(m);
      case "offer":
        return this.media.onOffer(m);
      case "answer":
        return this.media.onAnswer(m);
      case "candidate":
        return this.media.onCandidate(m);
      case "media_restart":
        return this.media.onMediaRestart(m);
      case "tracks":
        return this.media.onTracks(m);
      case "speaker":
        this.speaker = m.participant_id;
        return this.renderMedia();
      case "muted":
        return this.onMuted(m);
      case "recording":
        return this.onRecording(m);
      case "error":
        return this.onError(m);
      default:
        return undefined;
    }
  }

  onJoined(m) {
    const resumed = this.me !== null;
    this.me = m.participant;
    this.hearing = m.hearing;
    this.permissions = m.permissions || this.permissions;
    this.iceServers = m.ice_servers || [];
    this.roster = m.roster || [];
    this.placement = m.placement;
    this.consultation = m.consultation ?? null;
    document.body.dataset.audience = this.audience ? "1" : "0";
    const mine = this.roster.find((p) => p.id === this.me.id);
    if (mine) this.applyOwnMutes(mine.muted || []);
    if (resumed) this.toast(this.t("conn.reconnected"));
    this.enterPlacement();
    // A new WebSocket session gets a fresh peer: the server expects a new offer after (re)joining.
    this.media.reset();
    this.syncMedia();
    this.alerts.update();
    this.startQuality();
  }

  setPlacement(placement, consultation, permissions) {
    const before = this.placement;
    this.placement = placement;
    this.consultation = consultation;
    if (permissions) this.permissions = permissions;
    if (before !== placement) this.enterPlacement();
    if (before !== placement && placement === "consultation") this.announce(this.t("consult.entered"));
    if (before === "consultation" && placement === "courtroom") this.announce(this.t("consult.ended"));
    this.syncMedia();
    this.render();
  }

  enterPlacement() {
    if (WAITING.has(this.placement)) this.show("lobby");
    else if (IN_ROOM.has(this.placement)) this.show("hearing");
    this.announce(this.t(`placement.${this.placement}`));
  }

  onState(m) {
    if (this.hearing) this.hearing = { ...this.hearing, state: m.state, in_session_since: m.in_session_since ?? null };
    if (m.permissions) this.permissions = m.permissions;
    this.announce(this.t("state.changed", { state: this.t(`state.${m.state}`) }));
    if (m.state === "adjourned" || m.state === "cancelled") {
      this.end(m.state);
      return;
    }
    this.syncMedia();
    this.render();
  }

  onMuted(m) {
    const entry = this.roster.find((p) => p.id === m.participant_id);
    const muted = m.muted !== false;
    if (entry) {
      const set = new Set(entry.muted || []);
      if (muted) set.add(m.source);
      else set.delete(m.source);
      entry.muted = [...set];
      // The roster follows; meanwhile a mute by someone else is the court's (RosterEntry.muted_by_court).
      const court = new Set(entry.muted_by_court || []);
      if (muted && m.by && m.by !== m.participant_id) court.add(m.source);
      else if (!muted) court.delete(m.source);
      entry.muted_by_court = [...court];
    }
    if (this.me && m.participant_id === this.me.id) {
      this.setOwnMute(m.source, muted);
      if (m.by && m.by !== this.me.id) {
        const by = this.nameOf(m.by);
        const text = this.t(muted ? `mute.you_muted_${m.source}` : `mute.you_unmuted_${m.source}`, { by });
        this.toast(text);
        this.announce(text);
      }
    }
    this.render();
  }

  /** Recording health; `missing` names who is not being recorded (the REC indicator shows them). */
  onRecording(m) {
    const missing = Array.isArray(m.missing) ? m.missing : [];
    const before = this.recording;
    this.recording = { status: m.status, detail: m.detail || "", reason: m.reason || "", missing };
    const names = this.missingNames();
    const text = names ? this.t("rec.degraded_names", { names }) : this.t(`rec.${m.status}`);
    const beforeText = before ? `${before.status}|${before.missing.map((x) => x.participant_id + x.source).join()}` : "";
    if (beforeText !== `${m.status}|${missing.map((x) => x.participant_id + x.source).join()}`) this.announce(text);
    this.render();
  }

  /** The people the recording misses (consultation is expected, not a degradation), as one line. */
  missingNames() {
    if (!this.recording || this.recording.status !== "degraded") return "";
    const names = [];
    for (const item of this.recording.missing) {
      if (item.reason === "consultation") continue;
      const name = item.name || this.nameOf(item.participant_id);
      if (!names.includes(name)) names.push(name);
    }
    return names.join(this.t("list.separator"));
  }

  onError(m) {
    // Replies to our offers and restart requests are part of negotiation (docs/protocol.md): the media
    // session handles them and the page shows its media state; nothing for the participant to do.
    if (this.media.onError(m)) return;
    if (m.code === "muted_by_court") {
      // Our own unmute was refused: show the truth again (muted), with the reason.
      const mine = this.ownEntry();
      if (mine) this.applyOwnMutes(mine.muted || []);
      const text = this.t("courtmute.refused");
      this.toast(text, "error");
      this.announce(text);
      return;
    }
    if (["renegotiation_pending", "no_offer_pending", "restart_pending", "too_many_restarts"].includes(m.code)) return;
    const key = `error.${m.code}`;
    // A code with words (error.<code>, else reason.<code>); the server's English message only as a last resort.
    const words = this.i18n.has(`reason.${m.code}`) ? reasonText(this.i18n, m.code) : m.message || m.code;
    const text = this.i18n.has(key) ? this.t(key) : this.t("error.generic", { message: words });
    this.toast(text, "error");
  }

  // --- media -------------------------------------------------------------------------------

  bindMedia() {
    this.media.addEventListener("remote", () => this.renderMedia());
    this.media.addEventListener("state", (e) => this.onMediaHealth(e.detail));
    this.devices.addEventListener("change", () => this.attachPreviews());
  }

  /** Our own media's health changed: say so in the header and, while it is down, in a banner. */
  onMediaHealth(health) {
    const before = this.mediaHealth;
    if (health === before) return;
    this.mediaHealth = health;
    document.body.dataset.media = health;
    if (health === "reconnecting") this.announce(this.t("media.reconnecting"));
    if (health === "connected" && before === "reconnecting") this.announce(this.t("media.restored"));
    this.renderHeader();
  }

  syncMedia() {
    const active = IN_ROOM.has(this.placement) && this.signal.connected;
    const publish = active ? this.permissions.publish || [] : [];
    this.media.setLocalTrack("microphone", this.devices.microphone);
    this.media.setLocalTrack("camera", this.devices.camera);
    this.media.setLocalTrack("evidence", this.sharing);
    this.media.setEnabled("microphone", !this.selfMuted.microphone);
    this.media.setEnabled("camera", !this.selfMuted.camera);
    this.media.sync({ active: active && (this.permissions.receives || publish.length > 0), publish, iceServers: this.iceServers });
    this.renderMedia();
  }

  applyOwnMutes(sources) {
    for (const source of ["microphone", "camera"]) this.setOwnMute(source, sources.includes(source));
  }

  /** A source the court muted is muted here too, whatever the page thought (the roster is the truth). */
  applyCourtMutes() {
    const mine = this.ownEntry();
    if (!mine) return;
    for (const source of mine.muted_by_court || []) if (source in this.selfMuted) this.setOwnMute(source, true);
  }

  setOwnMute(source, muted) {
    if (!(source in this.selfMuted)) return;
    this.selfMuted[source] = muted;
    this.media.setEnabled(source, !muted);
    this.renderControls();
  }

  toggleOwn(source) {
    if (this.courtMuted(source) && this.selfMuted[source]) return; // only the court lifts it (button disabled)
    if (!this.me) {
      this.setOwnMute(source, !this.selfMuted[source]);
      return;
    }
    const muted = !this.selfMuted[source];
    this.setOwnMute(source, muted);
    this.signal.send({ type: "mute", participant_id: this.me.id, source, muted });
  }

  async toggleShare() {
    if (this.sharing) {
      this.sharing.stop();
      this.sharing = null;
      this.syncMedia();
      this.renderControls();
      return;
    }
    try {
      const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
      const track = stream.getVideoTracks()[0];
      track.addEventListener("ended", () => {
        if (this.sharing === track) {
          this.sharing = null;
          this.syncMedia();
          this.renderControls();
        }
      });
      this.sharing = track;
      this.syncMedia();
      this.renderControls();
    } catch {
      this.toast(this.t("controls.share_failed"), "error");
    }
  }

  startQuality() {
    clearInterval(this.qualityTimer);
    this.qualityTimer = setInterval(async () => {
      const q = await this.media.quality();
      const el = $("quality");
      if (!q) {
        el.textContent = "";
        return;
      }
      const mbit = (bps) => (bps == null ? "–" : (bps / 1e6).toFixed(2));
      el.textContent = this.t("quality.line", {
        rtt: q.rtt == null ? "–" : Math.round(q.rtt * 1000),
        up: mbit(q.up),
        down: mbit(q.down),
      });
    }, 2000);
  }

  /** Ask first (an accessible dialog); leave only when the person confirms. */
  async confirmLeave() {
    if (this.view === "ended") return;
    const ok = await confirmDialog({
      question: this.t("polish.leave_question"),
      detail: this.t("polish.leave_detail"),
      confirmLabel: this.t("polish.leave_confirm"),
      cancelLabel: this.t("polish.leave_cancel"),
    });
    if (ok && this.view !== "ended") this.leave();
  }

  leave() {
    this.signal.send({ type: "leave" });
    this.end("left");
  }

  // --- controls ----------------------------------------------------------------------------

  bindControls() {
    $("pj-join").addEventListener("click", () => this.join());
    $("pj-tone").addEventListener("click", async () => {
      $("pj-tone-result").textContent = this.t("prejoin.tone_playing");
      await this.devices.playTone();
      $("pj-tone-result").textContent = this.t("prejoin.tone_done");
    });
    $("pj-network").addEventListener("click", () => this.testNetwork());
    $("pj-camera").addEventListener("change", (e) => this.chooseDevice("videoinput", e.target.value));
    $("pj-mic").addEventListener("change", (e) => this.chooseDevice("audioinput", e.target.value));
    $("pj-speaker").addEventListener("change", (e) => this.chooseDevice("audiooutput", e.target.value));
    $("ctl-mic").addEventListener("click", () => this.toggleOwn("microphone"));
    $("ctl-cam").addEventListener("click", () => this.toggleOwn("camera"));
    $("ctl-share").addEventListener("click", () => this.toggleShare());
    $("ctl-leave").addEventListener("click", () => this.confirmLeave());
    $("consult-end").addEventListener("click", () => {
      if (this.me) this.act({ type: "end_consult", participant_ids: [this.me.id] });
    });
    $("gallery-toggle").addEventListener("click", () => {
      this.galleryOpen = !this.galleryOpen;
      renderConsole(this);
    });
    $("ctl-hand").addEventListener("click", () => toggleHand(this));
    $("lobby-leave").addEventListener("click", () => this.confirmLeave());
    $("ended-rejoin").addEventListener("click", () => location.reload());
    document.addEventListener("click", () => this.devices.audioContext?.resume().catch(() => {}), { capture: true });
  }

  /** Send a moderation or session request from the console. */
  act(message) {
    if (!this.signal.send(message)) this.toast(this.t("conn.not_connected"), "error");
  }

  nameOf(id) {
    if (this.me && id === this.me.id) return this.me.name;
    const entry = this.roster.find((p) => p.id === id);
    return entry ? entry.name : this.t("hearing.someone");
  }

  // --- rendering ---------------------------------------------------------------------------

  render() {
    this.renderHeader();
    if (this.view === "prejoin") this.renderPrejoin();
    if (this.view === "lobby") this.renderLobby();
    if (this.view === "hearing") {
      this.alerts.update();
      this.renderControls();
      this.renderMedia();
      this.renderConsultation();
      const restoreFocus = keepFocus($("console"));
      renderConsole(this);
      restoreFocus();
    }
    if (this.view === "ended") this.renderEnded();
  }

  renderHeader() {
    const hearing = this.hearing;
    $("hearing-title").textContent = hearing
      ? [hearing.case_number, hearing.title, this.t(`kind.${hearing.kind}`)].filter(Boolean).join(" · ")
      : "";
    const state = $("hearing-state");
    state.hidden = !hearing;
    if (hearing) {
      state.textContent = this.t(`state.${hearing.state}`);
      state.dataset.state = hearing.state;
    }
    const rec = $("rec-indicator");
    let recStatus = this.recording ? this.recording.status : hearing && hearing.state === "in_session" ? "pending" : "none";
    // Inside a private consultation nothing of ours is recorded: say so, without a blinking REC.
    const consulting = this.placement === "consultation" && this.view === "hearing";
    if (consulting) recStatus = "consultation";
    rec.hidden = !hearing || this.view === "ended";
    rec.dataset.status = recStatus;
    $("rec-text").textContent = consulting ? this.t("consult.private_not_recorded") : this.t(`rec.${recStatus}`);
    rec.title = this.recording && this.recording.reason ? reasonText(this.i18n, this.recording.reason) : "";
    // "Connected" only while our media is too: a page whose peer connection is down says so.
    let status = this.signal.status;
    if (status === "connected" && this.mediaHealth === "connecting") status = "media_connecting";
    if (status === "connected" && this.mediaHealth === "reconnecting") status = "media_reconnecting";
    const conn = this.view === "prejoin" && this.signal.status === "idle" ? "" : this.t(`conn.${status}`);
    const connEl = $("conn-state");
    if (connEl.textContent !== conn) connEl.textContent = conn;
    connEl.dataset.status = status;
    const mediaBanner = $("media-banner");
    const showMedia = status === "media_reconnecting" && this.view === "hearing";
    mediaBanner.hidden = !showMedia;
    const bannerText = this.t("media.reconnecting_banner");
    if (showMedia && mediaBanner.textContent !== bannerText) mediaBanner.textContent = bannerText;
    const names = this.missingNames();
    if (names && !consulting) $("rec-text").textContent = this.t("rec.degraded_names", { names });
  }

  renderPrejoin() {
    const claims = this.claims || {};
    const info = this.info || null;
    const who = this.me || (info && info.participant);
    $("pj-name").textContent = who ? who.name : this.t("prejoin.name_after_join");
    $("pj-role").textContent = claims.role ? this.t(`role.${claims.role}`) : "–";
    $("pj-site").textContent = info
      ? info.participant.site_name || info.participant.site_id
      : this.me
        ? siteName(this.me)
        : "–";
    this.renderVerdict();
    const hearing = this.hearing || (info && info.hearing);
    $("pj-hearing").textContent = hearing
      ? [hearing.case_number, hearing.title].filter(Boolean).join(" · ")
      : claims.hearing || "–";
    const error = $("pj-device-error");
    if (!error.hidden && error.dataset.key) error.textContent = this.t(error.dataset.key);
    // An observer sees who they are and the Join button: no device check, nothing asked of the browser.
    $("pj-devices").hidden = this.audience;
    $("pj-audience").hidden = !this.audience;
  }

  renderLobby() {
    $("lobby-preview-box").hidden = this.audience;
    const witness = this.placement === "witness_lobby";
    $("lobby-heading").textContent = this.t(witness ? "lobby.witness_heading" : "lobby.heading");
    $("lobby-text").textContent = this.t(witness ? "lobby.witness_text" : "lobby.text", {
      name: this.me ? this.me.name : "",
      role: this.me ? this.t(`role.${this.me.role}`) : "",
    });
    $("lobby-state").textContent = this.hearing
      ? this.t("lobby.hearing_state", { case: this.hearing.case_number, state: this.t(`state.${this.hearing.state}`) })
      : "";
  }

  renderEnded() {
    const reason = this.ended ? this.ended.reason : "closed";
    $("ended-heading").textContent = this.t(`ended.${reason}_heading`);
    const raw = this.ended ? this.ended.detail : "";
    // A close reason that only repeats the view ("removed", "denied", "joined elsewhere") adds nothing.
    const repeats = this.ended && this.ended.closed && REPEATED_CLOSE_REASONS.has(reasonCode(raw));
    const detail = raw && !repeats ? ` ${this.t("ended.reason", { reason: reasonText(this.i18n, raw) })}` : "";
    const byKind = { removed: "removed", denied: "denied" }[reason];
    // Removed or refused: by whom (the court, when the server does not say).
    const text = byKind ? byWhom(this.i18n, this.ended.by, byKind) : this.t(`ended.${reason}_text`);
    $("ended-text").textContent = text + detail;
    $("ended-rejoin").hidden = !["left", "elsewhere"].includes(reason);
  }

  renderControls() {
    const audience = this.audience;
    $("audience-badge").hidden = !audience;
    const mic = $("ctl-mic");
    const micOff = this.selfMuted.microphone;
    mic.replaceChildren(icon(micOff ? "micOff" : "mic"), h("span", {}, this.t(micOff ? "controls.unmute" : "controls.mute")));
    mic.setAttribute("aria-pressed", String(micOff));
    mic.setAttribute("aria-label", this.t(micOff ? "controls.unmute_label" : "controls.mute_label"));
    mic.disabled = !this.devices.microphone;
    mic.hidden = audience;
    const cam = $("ctl-cam");
    const camOff = this.selfMuted.camera;
    cam.replaceChildren(icon(camOff ? "cameraOff" : "camera"), h("span", {}, this.t(camOff ? "controls.camera_on" : "controls.camera_off")));
    cam.setAttribute("aria-pressed", String(camOff));
    cam.setAttribute("aria-label", this.t(camOff ? "controls.camera_on_label" : "controls.camera_off_label"));
    cam.disabled = !this.devices.camera;
    cam.hidden = audience;
    // Muted by the court: the button says so and is disabled with that reason until the court unmutes.
    const notes = [];
    for (const [source, button] of [["microphone", mic], ["camera", cam]]) {
      const court = !audience && this.courtMuted(source);
      button.classList.toggle("court-muted", court);
      button.dataset.courtMuted = String(court);
      if (court) {
        button.replaceChildren(icon(source === "microphone" ? "micOff" : "cameraOff"), h("span", {}, this.t(`courtmute.${source}`)));
        button.setAttribute("aria-pressed", "true");
        // Its name is what it shows; the reason is its description (the note under the controls).
        button.removeAttribute("aria-label");
        button.setAttribute("aria-describedby", "courtmute-note");
        button.title = this.t(`courtmute.${source}_label`);
        button.disabled = true;
        notes.push(this.t(`courtmute.${source}_label`));
      } else {
        button.removeAttribute("aria-describedby");
        button.removeAttribute("title");
      }
    }
    const note = $("courtmute-note");
    const noteText = notes.join(" ");
    note.hidden = !noteText;
    if (note.textContent !== noteText) note.textContent = noteText;
    const share = $("ctl-share");
    const mayShare = !audience && (this.permissions.publish || []).includes("evidence") && !!navigator.mediaDevices?.getDisplayMedia;
    share.hidden = !mayShare && !this.sharing;
    share.replaceChildren(icon("screen"), h("span", {}, this.t(this.sharing ? "controls.stop_share" : "controls.share")));
    share.setAttribute("aria-pressed", String(!!this.sharing));
    renderHand(this);
  }

  /** Which participants are shown: everyone in the courtroom (or one's own consultation) plus oneself. */
  visiblePeople() {
    const people = this.roster.filter((p) => {
      if (!IN_ROOM.has(p.placement)) return false;
      // The public gallery makes no tile: its people are an audience, not participants.
      if (AUDIENCE_ROLES.has(p.role)) return false;
      if (this.placement === "consultation") return p.placement === "consultation" && p.consultation === this.consultation;
      return true;
    });
    // No self-view for an observer (nothing of theirs is sent).
    if (this.me && !this.audience && !people.some((p) => p.id === this.me.id)) {
      people.unshift({ ...this.me, placement: this.placement, connected: true, muted: [], publishing: [] });
    }
    return people;
  }

  renderMedia() {
    if (this.view !== "hearing") return;
    const remote = this.media.remoteTracks();
    const byPerson = new Map();
    for (const r of remote) {
      if (!byPerson.has(r.participant_id)) byPerson.set(r.participant_id, {});
      byPerson.get(r.participant_id)[r.source] = r.track;
    }
    this.renderAudio(byPerson);
    const people = this.visiblePeople();
    const tiles = $("tiles");
    const seen = new Set();
    for (const person of people) {
      seen.add(person.id);
      const own = this.me && person.id === this.me.id;
      const camera = own ? (this.selfMuted.camera ? null : this.devices.camera) : byPerson.get(person.id)?.camera;
      let tile = this.tiles.get(person.id);
      if (!tile) {
        tile = this.makeTile(person.id);
        this.tiles.set(person.id, tile);
      }
      if (tile.parentNode !== tiles) tiles.append(tile);
      this.fillTile(tile, person, camera || null, own);
    }
    for (const [id, tile] of this.tiles) {
      if (!seen.has(id)) {
        tile.remove();
        this.tiles.delete(id);
      }
    }
    this.renderStage(byPerson);
  }

  renderAudio(byPerson) {
    const container = $("remote-audio");
    const wanted = new Map();
    for (const [pid, sources] of byPerson) if (sources.microphone) wanted.set(sources.microphone.id, { pid, track: sources.microphone });
    for (const [id, el] of this.audios) {
      if (!wanted.has(id)) {
        el.srcObject = null;
        el.remove();
        this.audios.delete(id);
      }
    }
    for (const [id, { pid, track }] of wanted) {
      if (this.audios.has(id)) continue;
      const el = h("audio", { autoplay: true, dataset: { participant: pid } });
      el.srcObject = new MediaStream([track]);
      if (this.devices.speakerId && el.setSinkId) el.setSinkId(this.devices.speakerId).catch(() => {});
      container.append(el);
      el.play().catch(() => {});
      this.audios.set(id, el);
    }
  }

  makeTile(pid) {
    const video = h("video", { autoplay: true, playsinline: true, muted: true });
    video.muted = true;
    return h(
      "figure",
      { class: "tile", dataset: { participant: pid } },
      video,
      h("div", { class: "tile-avatar", "aria-hidden": "true" }),
      h("figcaption", { class: "tile-label" }),
    );
  }

  fillTile(tile, person, cameraTrack, own) {
    const video = tile.querySelector("video");
    if (cameraTrack) {
      if (!video.srcObject || video.srcObject.getVideoTracks()[0] !== cameraTrack) {
        video.srcObject = new MediaStream([cameraTrack]);
        video.play().catch(() => {});
      }
    } else if (video.srcObject) {
      video.srcObject = null;
    }
    video.hidden = !cameraTrack;
    video.classList.toggle("mirror", own);
    tile.querySelector(".tile-avatar").textContent = (person.name || "?").trim().slice(0, 1).toUpperCase();
    tile.classList.toggle("speaking", this.speaker === person.id);
    tile.classList.toggle("disconnected", person.connected === false);
    tile.classList.toggle("consulting", person.placement === "consultation");
    const muted = own
      ? ["microphone", "camera"].filter((s) => this.selfMuted[s] || (person.muted || []).includes(s))
      : person.muted || [];
    const label = tile.querySelector(".tile-label");
    const parts = [
      h("span", { class: "role" }, this.t(`role.${person.role}`)),
      h("span", { class: "name" }, own ? this.t("hearing.you", { name: person.name }) : person.name),
      h("span", { class: "site" }, siteName(person)),
    ];
    for (const source of ["microphone", "camera"]) {
      if (muted.includes(source)) {
        parts.push(
          h("span", { class: `muted-flag muted-${source}`, role: "img", "aria-label": this.t(`hearing.muted_${source}`) },
            icon(source === "microphone" ? "micOff" : "cameraOff")),
        );
      }
    }
    if (person.connected === false) parts.push(h("span", { class: "flag" }, this.t("hearing.connection_lost")));
    else if (!own && ["stalled", "lost"].includes(mediaHealth(person))) {
      // Everyone sees why a picture froze: that person's media is interrupted (and being restored).
      parts.push(h("span", { class: "flag media-flag" }, this.t(`health.${mediaHealth(person)}`)));
    }
    if (person.placement === "consultation") {
      const since = person.consultation_since;
      parts.push(
        since == null
          ? h("span", { class: "flag" }, this.t("placement.consultation"))
          : h("span", { class: "flag consult-flag", dataset: { consultSince: String(since), consultKey: "consult.flag" } },
              this.t("consult.flag", { elapsed: formatElapsed(since) })),
      );
    }
    label.replaceChildren(...parts);
    tile.setAttribute(
      "aria-label",
      this.t("hearing.tile_label", { role: this.t(`role.${person.role}`), name: person.name, site: siteName(person) }),
    );
    tile.dataset.muted = muted.join(" ");
  }

  /**
   * The consultation bar: inside, "Private consultation — not recorded", the elapsed time and End; outside,
   * who is in consultation and for how long (roster `consultation_since`).
   */
  renderConsultation() {
    const bar = $("consult-bar");
    const end = $("consult-end");
    const member = this.placement === "consultation";
    bar.dataset.member = String(member);
    if (member) {
      const mine = this.ownEntry();
      const since = mine ? mine.consultation_since : null;
      $("consult-text").textContent = this.t("consult.private_not_recorded");
      const elapsed = $("consult-elapsed");
      if (since == null) {
        delete elapsed.dataset.consultSince;
        elapsed.textContent = "";
      } else {
        elapsed.dataset.consultSince = String(since);
        elapsed.dataset.consultKey = "";
        elapsed.textContent = formatElapsed(since);
      }
      end.hidden = false;
      end.textContent = this.t("consult.end");
      end.setAttribute("aria-label", this.t("consult.end_label"));
      bar.hidden = false;
      return;
    }
    end.hidden = true;
    const groups = new Map();
    for (const p of this.roster) {
      if (p.placement !== "consultation" || !p.consultation) continue;
      if (!groups.has(p.consultation)) groups.set(p.consultation, { names: [], since: p.consultation_since });
      groups.get(p.consultation).names.push(p.name);
    }
    bar.hidden = groups.size === 0 || this.view !== "hearing";
    const elapsed = $("consult-elapsed");
    delete elapsed.dataset.consultSince;
    elapsed.textContent = "";
    const text = $("consult-text");
    text.replaceChildren(
      ...[...groups.values()].map((g) => {
        const names = g.names.join(this.t("list.separator"));
        const attrs = g.since == null ? {} : { dataset: { consultSince: String(g.since), consultKey: "consult.others", names } };
        const elapsed = g.since == null ? "–" : formatElapsed(g.since);
        return h("span", { class: "consult-group", ...attrs }, this.t("consult.others", { names, elapsed }));
      }),
    );
  }

  /** Once a second: the bench clock and every elapsed consultation time on the page, updated in place. */
  tickElapsed() {
    if (this.view !== "hearing") return;
    tickBench(this);
    for (const el of document.querySelectorAll("[data-consult-since]")) {
      const elapsed = formatElapsed(Number(el.dataset.consultSince));
      const key = el.dataset.consultKey;
      const text = key ? this.t(key, { elapsed, names: el.dataset.names || "" }) : elapsed;
      if (el.textContent.trim() !== text) el.textContent = text;
    }
  }

  renderStage(byPerson) {
    const video = $("stage-video");
    let chosen = null;
    for (const [pid, sources] of byPerson) {
      // Evidence is shown only while its presenter says it is shown: a stopped display leaves the stage at
      // once (the roster comes first), never lingering as a frozen frame labelled as evidence.
      const presenter = this.roster.find((p) => p.id === pid);
      if (presenter && !(presenter.publishing || []).includes("evidence")) continue;
      if (sources.evidence && sources.evidence.readyState !== "ended") chosen = { pid, track: sources.evidence, evidence: true };
    }
    if (!chosen && this.sharing && this.me) chosen = { pid: this.me.id, track: this.sharing, evidence: true };
    if (!chosen && this.speaker && byPerson.get(this.speaker)?.camera) {
      chosen = { pid: this.speaker, track: byPerson.get(this.speaker).camera };
    }
    if (!chosen) {
      for (const [pid, sources] of byPerson) {
        if (sources.camera) {
          chosen = { pid, track: sources.camera };
          break;
        }
      }
    }
    const stage = $("stage");
    stage.classList.toggle("evidence", !!chosen?.evidence);
    if (chosen) {
      if (!video.srcObject || video.srcObject.getVideoTracks()[0] !== chosen.track) {
        video.srcObject = new MediaStream([chosen.track]);
        video.play().catch(() => {});
      }
      const person = this.roster.find((p) => p.id === chosen.pid) || (this.me && this.me.id === chosen.pid ? this.me : null);
      $("stage-label").textContent = person
        ? chosen.evidence
          ? this.t("hearing.evidence_of", { name: person.name })
          : `${this.t(`role.${person.role}`)} · ${person.name}${siteName(person) ? ` · ${siteName(person)}` : ""}`
        : "";
    } else {
      video.srcObject = null;
      $("stage-label").textContent = "";
    }
    video.hidden = !chosen;
    $("stage-empty").hidden = !!chosen;
  }
}

const app = new App();
// A small read-only handle for operators' diagnostics and the browser tests (stats of the real connection).
window.courtlink = Object.freeze({
  inbound: () => app.media.inbound(),
  outbound: () => app.media.outbound(),
  quality: () => app.media.quality(),
  mediaLog: () => app.media.history.slice(),
  state: () => ({
    view: app.view,
    connection: app.signal.status,
    media: app.media.connectionState,
    media_health: app.media.health,
    media_restarts: app.media.restarts,
    placement: app.placement,
    hearing_state: app.hearing ? app.hearing.state : null,
    participant_id: app.me ? app.me.id : null,
    language: app.i18n.lang,
    audience: app.audience,
    devices_requested: app.devices.requests,
  }),
});
app.start().catch((error) => {
  console.error(error);
});
