// The judge's and clerk's console: session controls, recording health, waiting room, witness room, roster.
// What is offered mirrors `permissions.actions` from the server; the server decides every request.

import { $, h, icon, keyed } from "./dom.js";
import { formatElapsed } from "./elapsed.js";
import { reasonText } from "./reasons.js";
import { renderBench } from "./bench.js";

const RECEIVE_ONLY = new Set(["observer", "recorder"]);
const AUDIENCE = new Set(["observer"]);
const IN_ROOM = new Set(["courtroom", "consultation"]);
const STALLED_ALERT_MS = 3000;
const CONNECTING_ALERT_MS = 15000;

/**
 * A roster entry's media health: `none | connecting | ok | stalled | lost` (docs/protocol.md). A server
 * that still reports the raw peer state in `media` is read the same way.
 */
export function mediaHealth(entry) {
  const value = entry ? entry.media : null;
  switch (value) {
    case "none":
    case "connecting":
    case "ok":
    case "stalled":
    case "lost":
      return value;
    case "new":
      return "connecting";
    case "connected":
      return "ok";
    case "disconnected":
      return "stalled";
    case "failed":
    case "closed":
      return "lost";
    default:
      return "none";
  }
}

/**
 * The judge's and clerk's media alerts: a party whose media has been `stalled` for more than 3 s, is
 * `lost`, has not connected in 15 s, whose connection dropped, or who left the courtroom. Shown in a
 * banner (role=alert, aria-live) while the console is shown; an alert clears when the party's media is
 * `ok` again (a departure when the party is back, or when dismissed).
 */
export class MediaAlerts {
  constructor(app) {
    this.app = app;
    this.seen = new Map(); // participant id -> {health, badSince (ms, local clock), wasOk, name, role}
    this.active = new Map(); // participant id -> {kind, name, role, since}
    this.expected = new Set(); // participants whose departure the console caused (removed, released)
    this.timer = null;
    this.bound = false;
  }

  /** Alerts are for whoever runs the hearing (judge, clerk, chair): those who admit people. */
  enabled() {
    const actions = this.app.permissions.actions || [];
    return this.app.view === "hearing" && (actions.includes("admit") || actions.includes("session_control"));
  }

  /** The console removed or sent away this participant: their departure is no alert. */
  expect(pid) {
    this.expected.add(pid);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    this.active.clear();
    this.render();
  }

  /** Read the roster again (on every roster message, and once a second for the 3-s rule). */
  update() {
    const app = this.app;
    if (!this.bound) {
      this.bound = true;
      $("media-alert-dismiss").addEventListener("click", () => {
        for (const [pid, alert] of this.active) if (alert.kind.startsWith("left")) this.active.delete(pid);
        this.render();
      });
    }
    if (!this.enabled()) {
      if (this.timer) this.stop();
      this.seen.clear();
      return;
    }
    if (!this.timer) this.timer = setInterval(() => this.update(), 1000);
    const now = Date.now();
    const me = app.me ? app.me.id : null;
    const present = new Set();
    for (const p of app.roster) {
      if (p.id === me || RECEIVE_ONLY.has(p.role) || !IN_ROOM.has(p.placement)) continue;
      present.add(p.id);
      this.expected.delete(p.id);
      const health = mediaHealth(p);
      const before = this.seen.get(p.id);
      // `badSince`: when the party's media stopped being `ok` (a restart's `connecting` after `ok` counts
      // as still interrupted); `wasOk`: it has been `ok` at least once.
      const wasOk = (before && before.wasOk) || health === "ok";
      const badSince = health === "ok" || health === "none" ? null : before && before.badSince ? before.badSince : now;
      this.seen.set(p.id, { health, badSince, wasOk, name: p.name, role: p.role, dropped: p.connected === false });
      let kind = null;
      if (p.connected === false) kind = "dropped";
      else if (health === "lost") kind = "lost";
      else if (badSince !== null && (health === "stalled" || wasOk) && now - badSince > STALLED_ALERT_MS) kind = "stalled";
      else if (badSince !== null && health === "connecting" && now - badSince > CONNECTING_ALERT_MS) kind = "connecting";
      const since = badSince ?? now;
      const current = this.active.get(p.id);
      if (kind) {
        this.active.set(p.id, { kind, name: p.name, role: p.role, since });
      } else if (current && (health === "ok" || health === "none" || current.kind.startsWith("left"))) {
        // Back to `ok` (or no media expected any more): the alert clears.
        this.active.delete(p.id);
      }
    }
    for (const [pid, info] of this.seen) {
      if (present.has(pid)) continue;
      this.seen.delete(pid);
      if (this.expected.has(pid)) {
        this.expected.delete(pid);
        this.active.delete(pid);
        continue;
      }
      // Gone after the resume grace with the connection still lost: say so, it is no ordinary departure.
      const kind = info.dropped ? "left_lost" : "left";
      this.active.set(pid, { kind, name: info.name, role: info.role, since: now });
    }
    this.render();
  }

  render() {
    const app = this.app;
    const banner = $("media-alert");
    const list = $("media-alert-list");
    const show = this.active.size > 0 && this.enabled();
    banner.hidden = !show;
    banner.dataset.count = String(show ? this.active.size : 0);
    if (!show) {
      if (list.childElementCount) list.replaceChildren();
      return;
    }
    const now = Date.now();
    const items = [...this.active].map(([pid, a]) => {
      const role = app.t(`role.${a.role}`);
      const seconds = Math.max(1, Math.round((now - a.since) / 1000));
      // The stalled line counts whole seconds; its text changes only when the count does.
      const key = a.kind === "left_lost" ? "bench.alert_left_lost" : `alert.${a.kind}`;
      return { pid, kind: a.kind, text: app.t(key, { name: a.name, role, seconds }) };
    });
    const key = items.map((i) => `${i.pid}:${i.kind}`).join("|");
    if (list.dataset.key === key) {
      // Same alerts: refresh the counters without re-announcing the list.
      items.forEach((item, n) => {
        const li = list.children[n];
        if (li && li.textContent !== item.text) li.firstChild.textContent = item.text;
      });
    } else {
      list.dataset.key = key;
      list.replaceChildren(
        ...items.map((i) => h("li", { dataset: { participant: i.pid, kind: i.kind } }, document.createTextNode(i.text))),
      );
    }
    $("media-alert-dismiss").hidden = !items.some((i) => i.kind.startsWith("left"));
  }
}

const SESSION_BUTTONS = [
  // action, permission needed, the hearing states in which it applies
  ["open", "session_open", ["scheduled"]],
  ["start", "session_control", ["open"]],
  ["recess", "session_control", ["in_session"]],
  ["resume", "session_control", ["recess"]],
  ["adjourn", "session_control", ["open", "in_session", "recess"]],
];

function person(app, p) {
  return h(
    "span",
    { class: "who" },
    h("span", { class: "name" }, p.name),
    h("span", { class: "meta" }, `${app.t(`role.${p.role}`)} · ${p.site_name || p.site || ""}`),
    p.connected === false ? h("span", { class: "flag" }, app.t("hearing.connection_lost")) : null,
  );
}

/** The party's media health as a badge (not for receive-only roles, who send nothing). */
function mediaBadge(app, p) {
  if (RECEIVE_ONLY.has(p.role) && mediaHealth(p) !== "lost") return null;
  const health = mediaHealth(p);
  return h("span", { class: "media-badge", dataset: { media: health } }, app.t(`health.${health}`));
}

/** The people the recording misses, one line each: name, sources, why. */
function missingList(app, rec) {
  const people = new Map();
  for (const m of rec.missing || []) {
    const key = m.participant_id;
    if (!people.has(key)) people.set(key, { name: m.name || app.nameOf(m.participant_id), sources: [], reasons: [] });
    const entry = people.get(key);
    if (!entry.sources.includes(m.source)) entry.sources.push(m.source);
    if (!entry.reasons.includes(m.reason)) entry.reasons.push(m.reason);
  }
  if (!people.size) return null;
  return h(
    "ul",
    { class: "missing-list", id: "console-recording-missing" },
    ...[...people].map(([pid, p]) =>
      h(
        "li",
        { dataset: { participant: pid } },
        app.t("rec.missing_line", {
          name: p.name,
          sources: p.sources.map((s) => app.t(`source.${s}`)).join(app.t("list.separator")),
          reason: p.reasons
            .map((r) => (app.i18n.has(`rec.reason_${r}`) ? app.t(`rec.reason_${r}`) : reasonText(app.i18n, r)))
            .join(app.t("list.separator")),
        }),
      ),
    ),
  );
}

function button(label, aria, onclick, kind = "") {
  return h("button", { type: "button", class: `btn btn-small ${kind}`, "aria-label": aria, onclick }, label);
}

/** Render the console into #console; hidden for participants without moderation rights. */
export function renderConsole(app) {
  const actions = new Set(app.permissions.actions || []);
  const aside = $("console");
  aside.hidden = actions.size === 0;
  if (aside.hidden) return;
  renderBench(app, actions);
  const t = (k, p) => app.t(k, p);
  const state = app.hearing ? app.hearing.state : "scheduled";
  const me = app.me ? app.me.id : null;

  // Session controls.
  $("panel-session").hidden = !actions.has("session_open") && !actions.has("session_control");
  $("console-state").textContent = t(`state.${state}`);
  $("session-buttons").replaceChildren(
    ...SESSION_BUTTONS.filter(([, need]) => actions.has(need)).map(([action, , states]) => {
      const b = h(
        "button",
        {
          type: "button",
          class: `btn ${action === "adjourn" ? "btn-danger" : "btn-primary"}`,
          dataset: { action },
          onclick: () => {
            if (action === "adjourn" && !window.confirm(t("console.confirm_adjourn"))) return;
            app.act({ type: "session", action });
          },
        },
        t(`session.${action}`),
      );
      b.disabled = !states.includes(state);
      return b;
    }),
  );

  // Recording health.
  const rec = app.recording;
  $("panel-recording").hidden = !actions.has("session_control") && !actions.has("session_open");
  $("console-recording").textContent = rec
    ? `${t(`rec.${rec.status}`)}${rec.reason ? ` — ${reasonText(app.i18n, rec.reason)}` : ""}`
    : t(state === "in_session" ? "rec.pending" : "rec.none");
  $("console-recording").dataset.status = rec ? rec.status : "none";
  $("console-recording").dataset.reason = rec ? rec.reason || "" : "";
  const missing = rec ? missingList(app, rec) : null;
  const oldMissing = $("console-recording-missing");
  if (oldMissing) oldMissing.remove();
  if (missing) $("console-recording").after(missing);

  // Waiting room.
  const waiting = app.roster.filter((p) => p.placement === "lobby");
  $("panel-lobby").hidden = !actions.has("admit") && !actions.has("deny");
  const lobbyContext = [app.i18n.lang, actions.has("admit"), actions.has("deny")];
  keyed(
    $("lobby-queue"),
    waiting.length ? waiting : [null],
    (p) => (p ? p.id : ""),
    (p) => JSON.stringify([p, lobbyContext]),
    (p) =>
      p
        ? h(
            "li",
            { dataset: { participant: p.id } },
            person(app, p),
            h(
              "span",
              { class: "button-row" },
              actions.has("admit")
                ? button(t("console.admit"), t("console.admit_label", { name: p.name }), () =>
                    app.act({ type: "admit", participant_id: p.id }), "btn-primary")
                : null,
              actions.has("deny")
                ? button(t("console.deny"), t("console.deny_label", { name: p.name }), () =>
                    app.act({ type: "deny", participant_id: p.id }))
                : null,
            ),
          )
        : h("li", { class: "empty" }, t("console.nobody_waiting")),
  );

  // Witness room.
  const witnesses = app.roster.filter((p) => p.placement === "witness_lobby");
  $("panel-witness").hidden = !actions.has("call_witness") || witnesses.length === 0;
  keyed(
    $("witness-queue"),
    witnesses,
    (p) => p.id,
    (p) => JSON.stringify([p, app.i18n.lang]),
    (p) =>
      h(
        "li",
        { dataset: { participant: p.id } },
        person(app, p),
        button(t("console.call_witness"), t("console.call_witness_label", { name: p.name }), () =>
          app.act({ type: "call_witness", participant_id: p.id }), "btn-primary"),
      ),
  );

  // Roster of the courtroom (and of consultations).
  // The public gallery is counted apart (below), not listed among the parties.
  const present = app.roster.filter((p) => IN_ROOM.has(p.placement) && !AUDIENCE.has(p.role));
  const counsel = present.filter((p) => p.role === "counsel" && p.placement === "courtroom");
  const rosterContext = [app.i18n.lang, [...actions].sort(), me, counsel.map((c) => c.id)];
  keyed(
    $("roster"),
    present,
    (p) => p.id,
    (p) => JSON.stringify([p, rosterContext]),
    (p) => {
      const muted = new Set(p.muted || []);
      const byCourt = new Set(p.muted_by_court || []);
      const controls = [];
      // Observers publish nothing, so there is nothing of theirs to mute.
      if (p.id !== me && actions.has("mute_others") && !RECEIVE_ONLY.has(p.role)) {
        for (const source of ["microphone", "camera"]) {
          // Only the court's own mute is lifted here; a party's self-mute is theirs (the court may still mute it).
          const isMuted = byCourt.has(source);
          const b = button(
            h("span", {}, icon(source === "microphone" ? (isMuted ? "micOff" : "mic") : isMuted ? "cameraOff" : "camera"),
              t(isMuted ? `console.unmute_${source}` : `console.mute_${source}`)),
            t(isMuted ? `console.unmute_${source}_label` : `console.mute_${source}_label`, { name: p.name }),
            () => app.act({ type: "mute", participant_id: p.id, source, muted: !isMuted }),
          );
          b.dataset.action = `${isMuted ? "unmute" : "mute"}-${source}`;
          b.setAttribute("aria-pressed", String(isMuted));
          controls.push(b);
        }
      }
      if (p.role === "witness" && p.placement === "courtroom" && actions.has("release_witness")) {
        controls.push(button(t("console.release_witness"), t("console.release_witness_label", { name: p.name }), () => {
          app.alerts.expect(p.id);
          app.act({ type: "release_witness", participant_id: p.id });
        }));
      }
      if (actions.has("consult") && p.role === "defendant" && p.placement === "courtroom" && counsel.length) {
        controls.push(button(t("console.consult"), t("console.consult_label", { name: p.name }), () =>
          app.act({ type: "consult", participant_ids: [p.id, ...counsel.map((c) => c.id)] })));
      }
      if (actions.has("consult") && p.placement === "consultation" && p.role === "defendant") {
        controls.push(button(t("console.end_consult"), t("console.end_consult_label", { name: p.name }), () =>
          app.act({ type: "end_consult", participant_ids: [p.id] })));
      }
      if (p.id !== me && actions.has("remove")) {
        const b = button(t("console.remove"), t("console.remove_label", { name: p.name }), () => {
          if (window.confirm(t("console.confirm_remove", { name: p.name }))) {
            app.alerts.expect(p.id);
            app.act({ type: "remove", participant_id: p.id });
          }
        }, "btn-danger");
        b.dataset.action = "remove";
        controls.push(b);
      }
      return h(
        "li",
        { dataset: { participant: p.id, muted: [...muted].join(" "), media: mediaHealth(p) } },
        person(app, p),
        mediaBadge(app, p),
        muted.size
          ? h("span", { class: "meta" }, [...muted].map((s) => t(byCourt.has(s) && s !== "evidence" ? `courtmute.meta_${s}` : `hearing.muted_${s}`)).join(", "))
          : null,
        p.placement === "consultation" ? consultFlag(app, p) : null,
        h("span", { class: "button-row" }, controls),
      );
    },
  );

  // The public gallery: a count, and the list on demand (a disclosure button), for those who run the hearing.
  $("panel-gallery").hidden = !actions.has("admit");
  if (actions.has("admit")) renderGallery(app);
}

/** A party's consultation flag with its elapsed time (ticked in place by the app, see tickElapsed). */
function consultFlag(app, p) {
  if (p.consultation_since == null) return h("span", { class: "flag" }, app.t("placement.consultation"));
  return h(
    "span",
    { class: "flag consult-flag", dataset: { consultSince: String(p.consultation_since), consultKey: "consult.flag" } },
    app.t("consult.flag", { elapsed: formatElapsed(p.consultation_since) }),
  );
}

function renderGallery(app) {
  const gallery = app.roster.filter((p) => AUDIENCE.has(p.role) && IN_ROOM.has(p.placement));
  const heading = app.t("audience.gallery_count", { count: gallery.length });
  if ($("gallery-heading").textContent !== heading) $("gallery-heading").textContent = heading;
  $("panel-gallery").dataset.count = String(gallery.length);
  const toggle = $("gallery-toggle");
  const open = app.galleryOpen;
  toggle.setAttribute("aria-expanded", String(open));
  toggle.textContent = app.t(open ? "audience.gallery_hide" : "audience.gallery_show");
  const list = $("gallery-list");
  list.hidden = !open;
  if (!open) return;
  keyed(
    list,
    gallery.length ? gallery : [null],
    (p) => (p ? p.id : ""),
    (p) => JSON.stringify([p, app.i18n.lang]),
    (p) =>
      p
        ? h("li", { dataset: { participant: p.id } }, person(app, p))
        : h("li", { class: "empty" }, app.t("audience.gallery_empty")),
  );
}
