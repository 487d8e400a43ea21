// What a bench needs in the console (docs/web-client.md): the court's clock in its time zone, the scheduled
// window, the time in session, the waiting-room count, raised hands in order (with a notification) and
// "mute everyone but the bench"; and the participant's own hand-raise button. The server decides every request.

import { $, h, icon, keyed } from "./dom.js";

/** A time formatter in the court's time zone (the browser's own if the zone is unknown to it). */
function formatter(app, options) {
  const zone = app.hearing && app.hearing.timezone ? app.hearing.timezone : undefined;
  const lang = app.i18n.lang;
  try {
    return new Intl.DateTimeFormat(lang, { ...options, timeZone: zone, hourCycle: "h23" });
  } catch {
    return new Intl.DateTimeFormat(lang, { ...options, hourCycle: "h23" });
  }
}

/** Seconds as h:mm:ss. */
export function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const pad = (n) => String(n).padStart(2, "0");
  return `${Math.floor(s / 3600)}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

/** The clock and the time in session; once a second while the console is shown. */
/** The bench bar's clock and time in session, in place; called by the page's one-second tick. */
export function tickBench(app) {
  if (app.view !== "hearing" || $("console").hidden || $("bench-bar").hidden || !app.hearing) return;
  const hearing = app.hearing;
  const clock = $("bench-clock");
  const now = formatter(app, { hour: "2-digit", minute: "2-digit", second: "2-digit" }).format(new Date());
  setText(clock, now);
  const label = app.t("bench.clock_label", { zone: hearing.timezone || Intl.DateTimeFormat().resolvedOptions().timeZone });
  if (clock.title !== label) clock.title = label;
  clock.dataset.timezone = hearing.timezone || "";
  const since = hearing.state === "in_session" && hearing.in_session_since ? hearing.in_session_since : null;
  const elapsed = $("bench-elapsed");
  setText(
    elapsed,
    since ? app.t("bench.elapsed", { time: duration(Date.now() / 1000 - since) }) : app.t("bench.not_in_session"),
  );
  elapsed.dataset.since = since ? String(since) : "";
}

/** Raised hands, first raised first. */
export function raisedHands(app) {
  return app.roster
    .filter((p) => p.hand_raised_at !== null && p.hand_raised_at !== undefined)
    .sort((a, b) => a.hand_raised_at - b.hand_raised_at);
}

/** A new raised hand is announced to the bench (a toast and the screen reader), once per raising. */
function noticeHands(app, hands) {
  const before = app.handsSeen || new Map();
  const now = new Map(hands.map((p) => [p.id, p.hand_raised_at]));
  for (const p of hands) {
    if (before.get(p.id) === p.hand_raised_at) continue;
    const text = app.t("bench.hand_raised", { name: p.name, role: app.t(`role.${p.role}`) });
    app.toast(text);
    app.announce(text);
  }
  app.handsSeen = now;
}

/** The bench bar, the raised hands and the mute-all buttons of the console (called by renderConsole). */
export function renderBench(app, actions) {
  const bench = actions.has("admit") || actions.has("session_open") || actions.has("session_control");
  $("bench-bar").hidden = !bench;
  $("panel-hands").hidden = true;
  if (!bench) return;
  const t = (k, p) => app.t(k, p);
  const hearing = app.hearing || {};

  // The scheduled window, in the court's time zone.
  const windowEl = $("bench-window");
  if (hearing.starts_at && hearing.ends_at) {
    const fmt = formatter(app, { hour: "2-digit", minute: "2-digit" });
    setText(windowEl, t("bench.window", { start: fmt.format(new Date(hearing.starts_at)), end: fmt.format(new Date(hearing.ends_at)) }));
  } else {
    setText(windowEl, "");
  }

  // The waiting room's count, always in sight.
  const waiting = app.roster.filter((p) => p.placement === "lobby").length;
  const waitingEl = $("bench-waiting");
  setText(waitingEl, t("bench.waiting", { n: waiting }));
  waitingEl.setAttribute("aria-label", t("bench.waiting_label", { n: waiting }));
  waitingEl.dataset.count = String(waiting);

  // Raised hands in order, each with a button to lower it.
  const hands = raisedHands(app);
  noticeHands(app, hands);
  const handsEl = $("bench-hands-count");
  setText(handsEl, t("bench.hands_count", { n: hands.length }));
  handsEl.dataset.count = String(hands.length);
  $("panel-hands").hidden = hands.length === 0;
  const at = formatter(app, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  keyed(
    $("hands-queue"),
    hands,
    (p) => p.id,
    (p) => JSON.stringify([p.id, p.name, p.role, p.hand_raised_at, app.i18n.lang, actions.has("mute_others")]),
    (p) =>
      h(
        "li",
        { dataset: { participant: p.id } },
        h(
          "span",
          { class: "who" },
          h("span", { class: "name" }, p.name),
          h("span", { class: "meta" }, `${t(`role.${p.role}`)} · ${t("bench.hand_since", { time: at.format(new Date(p.hand_raised_at * 1000)) })}`),
        ),
        actions.has("mute_others")
          ? h(
              "span",
              { class: "button-row" },
              h(
                "button",
                {
                  type: "button",
                  class: "btn btn-small",
                  dataset: { action: "lower-hand" },
                  "aria-label": t("bench.lower_label", { name: p.name }),
                  onclick: () => app.act({ type: "lower_hand", participant_id: p.id }),
                },
                t("bench.lower"),
              ),
            )
          : null,
      ),
  );

  // Mute everyone but the bench; the buttons are made once so that focus stays on them.
  const row = $("bench-mute-row");
  row.hidden = !actions.has("mute_all");
  if (actions.has("mute_all")) {
    if (!row.childElementCount) {
      for (const [action, muted] of [["mute-all", true], ["unmute-all", false]]) {
        row.append(
          h(
            "button",
            {
              type: "button",
              class: "btn btn-small",
              dataset: { action },
              onclick: () => app.act({ type: "mute_all", source: "microphone", muted }),
            },
            h("span", {}, icon(muted ? "micOff" : "mic"), h("span", { class: "label" })),
          ),
        );
      }
    }
    for (const b of row.children) {
      const key = b.dataset.action === "mute-all" ? "bench.mute_all" : "bench.unmute_all";
      setText(b.querySelector(".label"), t(key));
      b.setAttribute("aria-label", t(`${key}_label`));
    }
  }

  tickBench(app);
}

/** The participant's own hand-raise button (for those who may speak, not the bench). */
export function renderHand(app) {
  const button = $("ctl-hand");
  const mine = app.me ? app.roster.find((p) => p.id === app.me.id) : null;
  const raised = !!(mine && mine.hand_raised_at);
  button.hidden = !(app.permissions.raise_hand || raised);
  const key = raised ? "bench.lower_hand" : "bench.raise_hand";
  const label = app.t(raised ? "bench.lower_hand_label" : "bench.raise_hand_label");
  if (button.dataset.key !== `${key}|${app.i18n.lang}`) {
    button.replaceChildren(icon("person"), h("span", {}, app.t(key)));
    button.dataset.key = `${key}|${app.i18n.lang}`;
  }
  button.setAttribute("aria-pressed", String(raised));
  button.setAttribute("aria-label", label);
}

/** The hand button was pressed: raise or lower one's own hand. */
export function toggleHand(app) {
  const mine = app.me ? app.roster.find((p) => p.id === app.me.id) : null;
  app.act({ type: mine && mine.hand_raised_at ? "lower_hand" : "raise_hand" });
}
