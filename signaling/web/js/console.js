// The judge's and clerk's console: session controls, recording health, waiting room, witness room, roster.
// What is offered mirrors `permissions.actions` from the server; the server decides every request.

import { $, h, icon } from "./dom.js";

const RECEIVE_ONLY = new Set(["observer", "recorder"]);

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
    h("span", { class: "meta" }, `${app.t(`role.${p.role}`)} · ${p.site || ""}`),
    p.connected === false ? h("span", { class: "flag" }, app.t("hearing.connection_lost")) : null,
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
    ? `${t(`rec.${rec.status}`)}${rec.detail ? ` — ${rec.detail}` : ""}`
    : t(state === "in_session" ? "rec.pending" : "rec.none");
  $("console-recording").dataset.status = rec ? rec.status : "none";

  // Waiting room.
  const waiting = app.roster.filter((p) => p.placement === "lobby");
  $("panel-lobby").hidden = !actions.has("admit") && !actions.has("deny");
  $("lobby-queue").replaceChildren(
    ...(waiting.length
      ? waiting.map((p) =>
          h(
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
          ),
        )
      : [h("li", { class: "empty" }, t("console.nobody_waiting"))]),
  );

  // Witness room.
  const witnesses = app.roster.filter((p) => p.placement === "witness_lobby");
  $("panel-witness").hidden = !actions.has("call_witness") || witnesses.length === 0;
  $("witness-queue").replaceChildren(
    ...witnesses.map((p) =>
      h(
        "li",
        { dataset: { participant: p.id } },
        person(app, p),
        button(t("console.call_witness"), t("console.call_witness_label", { name: p.name }), () =>
          app.act({ type: "call_witness", participant_id: p.id }), "btn-primary"),
      ),
    ),
  );

  // Roster of the courtroom (and of consultations).
  const present = app.roster.filter((p) => p.placement === "courtroom" || p.placement === "consultation");
  const counsel = present.filter((p) => p.role === "counsel" && p.placement === "courtroom");
  $("roster").replaceChildren(
    ...present.map((p) => {
      const muted = new Set(p.muted || []);
      const controls = [];
      // Observers publish nothing, so there is nothing of theirs to mute.
      if (p.id !== me && actions.has("mute_others") && !RECEIVE_ONLY.has(p.role)) {
        for (const source of ["microphone", "camera"]) {
          const isMuted = muted.has(source);
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
        controls.push(button(t("console.release_witness"), t("console.release_witness_label", { name: p.name }), () =>
          app.act({ type: "release_witness", participant_id: p.id })));
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
          if (window.confirm(t("console.confirm_remove", { name: p.name }))) app.act({ type: "remove", participant_id: p.id });
        }, "btn-danger");
        b.dataset.action = "remove";
        controls.push(b);
      }
      return h(
        "li",
        { dataset: { participant: p.id, muted: [...muted].join(" ") } },
        person(app, p),
        muted.size ? h("span", { class: "meta" }, [...muted].map((s) => t(`hearing.muted_${s}`)).join(", ")) : null,
        p.placement === "consultation" ? h("span", { class: "flag" }, t("placement.consultation")) : null,
        h("span", { class: "button-row" }, controls),
      );
    }),
  );
}
