// The clerk's booking page (/book): book a hearing over the REST API with the clerk's key, and see each site's
// link budget (docs/protocol.md, "Site link budget") while choosing the time and the participants, and after booking.

import { I18n, pickLanguage } from "./i18n.js";
import { $, h, fillIcons } from "./dom.js";

const KEY_STORAGE = "courtlink.clerk_key";
const KINDS = ["trial", "arraignment", "mediation", "meeting", "reception", "observation"];
const ROLES = [
  "judge", "clerk", "prosecutor", "counsel", "defendant", "party", "witness", "interpreter", "observer", "chair",
  "attendee",
];
const PLANNED_ID = "new"; // the id GET /sites/{id}/link gives the hearing about to be booked
const REFRESH_DELAY_MS = 300;

const pad = (n) => String(n).padStart(2, "0");

/** A Date as the value of an <input type="datetime-local"> (the browser's local time). */
function localValue(date) {
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

/** The RFC 3339 time (UTC) of a datetime-local value, or null when it is empty or not a time. */
function isoOf(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}

class BookingPage {
  constructor() {
    this.i18n = new I18n();
    this.key = "";
    this.sites = [];
    this.rooms = [];
    this.budgets = []; // what the link panel shows: SiteLinkBudget entries
    this.booked = null; // the last booking's answer, while the form is unchanged since
    this.timer = 0;
    this.generation = 0;
  }

  async start() {
    await this.i18n.use(pickLanguage());
    fillIcons();
    $("lang-toggle").addEventListener("click", () =>
      this.i18n.use(this.i18n.lang === "en" ? "zh-CN" : "en", { remember: true }),
    );
    this.i18n.addEventListener("change", () => this.relabel());
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.useKey($("bk-key").value.trim());
    });
    $("bk-add").addEventListener("click", () => this.addPerson());
    $("book-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    $("book-form").addEventListener("input", () => this.changed());
    $("book-form").addEventListener("change", () => this.changed());
    let saved = "";
    try {
      saved = sessionStorage.getItem(KEY_STORAGE) || "";
    } catch {
      // Storage disabled: the clerk types the key again.
    }
    if (saved) await this.useKey(saved);
    else this.show("key");
  }

  show(view) {
    document.body.dataset.view = view;
    $("view-loading").hidden = true;
    $("view-key").hidden = view !== "key";
    $("view-form").hidden = view !== "form";
    if (view === "key") $("bk-key").focus();
  }

  t(key, params) {
    return this.i18n.t(key, params);
  }

  /** One REST call with the clerk's key: {status, ok, body} (body: the JSON answer, or null). */
  async api(method, path, body) {
    const headers = { Authorization: `Bearer ${this.key}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    try {
      const response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
      let data = null;
      try {
        data = await response.json();
      } catch {
        data = null;
      }
      return { status: response.status, ok: response.ok, body: data };
    } catch (error) {
      return { status: 0, ok: false, body: { detail: String(error) } };
    }
  }

  problemText(answer) {
    if (answer.status === 0) return this.t("book.unreachable");
    const detail = answer.body && typeof answer.body.detail === "string" ? answer.body.detail : "";
    return this.t("book.refused", { status: answer.status, detail });
  }

  async useKey(key) {
    if (!key) return;
    this.key = key;
    const [sites, rooms] = await Promise.all([this.api("GET", "/api/v1/sites"), this.api("GET", "/api/v1/courtrooms")]);
    if (!sites.ok || !rooms.ok) {
      const error = $("bk-key-error");
      error.textContent = this.problemText(sites.ok ? rooms : sites);
      error.hidden = false;
      try {
        sessionStorage.removeItem(KEY_STORAGE);
      } catch {
        // Nothing stored.
      }
      this.show("key");
      return;
    }
    try {
      sessionStorage.setItem(KEY_STORAGE, key);
    } catch {
      // Not remembered; this page still works.
    }
    $("bk-key-error").hidden = true;
    this.sites = sites.body.items;
    this.rooms = rooms.body.items;
    this.fillForm();
    this.show("form");
  }

  siteName(siteId) {
    const site = this.sites.find((s) => s.id === siteId);
    return site ? site.name : siteId;
  }

  fillForm() {
    const kind = $("bk-kind");
    kind.replaceChildren(...KINDS.map((k) => h("option", { value: k }, this.t(`kind.${k}`))));
    const room = $("bk-room");
    room.replaceChildren(...this.rooms.map((r) => h("option", { value: r.id }, `${r.name} (${this.siteName(r.site_id)})`)));
    const start = new Date();
    start.setMinutes(0, 0, 0);
    start.setHours(start.getHours() + 1);
    $("bk-start").value = localValue(start);
    $("bk-end").value = localValue(new Date(start.getTime() + 3600 * 1000));
    $("bk-people").replaceChildren();
    this.addPerson();
  }

  addPerson() {
    const n = $("bk-people").children.length;
    const roleSelect = h(
      "select",
      { class: "bk-role", "aria-label": this.t("book.role_of", { n: n + 1 }) },
      ROLES.map((r) => h("option", { value: r, "data-i18n": `role.${r}` }, this.t(`role.${r}`))),
    );
    const siteSelect = h(
      "select",
      { class: "bk-site", "aria-label": this.t("book.site_of", { n: n + 1 }) },
      this.sites.map((s) => h("option", { value: s.id }, s.name)),
    );
    const row = h(
      "li",
      {},
      h(
        "div",
        {},
        h("input", { class: "bk-name", required: true, maxlength: 200, "aria-label": this.t("book.name_of", { n: n + 1 }) }),
        roleSelect,
        siteSelect,
        h("button", {
          type: "button",
          class: "btn btn-small bk-remove",
          onclick: () => {
            row.remove();
            this.changed();
          },
        }, this.t("book.remove")),
      ),
    );
    $("bk-people").append(row);
    this.changed();
  }

  people() {
    return [...$("bk-people").children].map((row) => ({
      name: row.querySelector(".bk-name").value.trim(),
      role: row.querySelector(".bk-role").value,
      site_id: row.querySelector(".bk-site").value,
    }));
  }

  /** The form changed: the last booking's figures no longer apply; look the links up again shortly. */
  changed() {
    this.booked = null;
    $("bk-result").hidden = true;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refreshBudget(), REFRESH_DELAY_MS);
  }

  async refreshBudget() {
    const generation = ++this.generation;
    const startsAt = isoOf($("bk-start").value);
    const endsAt = isoOf($("bk-end").value);
    const people = this.people().filter((p) => p.site_id);
    const siteIds = [...new Set(people.map((p) => p.site_id))].sort();
    if (!startsAt || !endsAt || !siteIds.length) {
      this.renderBudget([], "none");
      return;
    }
    const planned = people.map((p) => `${p.role}@${p.site_id}`).join(",");
    const answers = await Promise.all(
      siteIds.map((id) => {
        const query = new URLSearchParams({ starts_at: startsAt, ends_at: endsAt, participants: planned });
        return this.api("GET", `/api/v1/sites/${encodeURIComponent(id)}/link?${query}`);
      }),
    );
    if (generation !== this.generation || this.booked) return; // a later look-up or a booking answered meanwhile
    const failed = answers.find((a) => !a.ok);
    if (failed) {
      this.renderBudget([], "error", this.problemText(failed));
      return;
    }
    this.renderBudget(answers.map((a) => a.body), "planned");
  }

  /** Fill the link panel; mode: "planned" (before booking), "booked" (the booking's answer), "none", "error". */
  renderBudget(entries, mode, error = "") {
    this.budgets = entries;
    this.budgetMode = mode;
    this.budgetError = error;
    const list = $("bk-sites");
    $("bk-budget-heading").textContent = this.t(mode === "booked" ? "book.link_heading_booked" : "book.link_heading");
    const note = $("bk-budget-note");
    note.hidden = mode !== "none" && mode !== "error";
    note.textContent = mode === "error" ? error : this.t("book.link_note");
    note.classList.toggle("book-error", mode === "error");
    const over = entries.filter((e) => e.over).length;
    $("bk-budget").dataset.over = String(over > 0);
    // Over-budget links first (the warning in sight on a short screen), then checked links, then undeclared ones.
    const rank = (e) => (e.over ? 0 : e.link_mbps === null ? 2 : 1);
    const ordered = [...entries].sort((a, b) => rank(a) - rank(b) || a.site_id.localeCompare(b.site_id));
    list.replaceChildren(...ordered.map((entry) => this.siteCard(entry)));
  }

  siteCard(entry) {
    const name = this.siteName(entry.site_id);
    const fmt = (mbps) => mbps.toFixed(1);
    const state = entry.link_mbps === null ? "unknown" : String(entry.over);
    const children = [h("h3", {}, name)];
    if (entry.link_mbps === null) {
      children.push(h("p", { class: "budget-figure" }, this.t("book.link_unknown", { expected: fmt(entry.expected_mbps) })));
    } else {
      const fill = h("span");
      // CSSOM, not a style attribute: the page's Content-Security-Policy allows no inline styles.
      fill.style.width = `${Math.min(100, (100 * entry.expected_mbps) / entry.link_mbps).toFixed(0)}%`;
      children.push(
        h("p", { class: "budget-figure" }, this.t("book.link_figure", {
          expected: fmt(entry.expected_mbps),
          link: fmt(entry.link_mbps),
        })),
        h("div", { class: "budget-bar", "aria-hidden": "true" }, fill),
      );
      if (entry.over) {
        children.push(h("p", { class: "budget-warning", role: "alert" }, this.t("book.link_over", {
          site: name,
          expected: fmt(entry.expected_mbps),
          link: fmt(entry.link_mbps),
        })));
      }
    }
    const rows = entry.hearings.map((hearing) => {
      const mine = this.booked && hearing.id === this.booked.id;
      let label = hearing.case_number;
      if (hearing.id === PLANNED_ID) label = this.t("book.this_hearing");
      else if (mine) label = this.t("book.this_hearing_case", { case_number: hearing.case_number });
      const from = new Date(hearing.starts_at);
      const to = new Date(hearing.ends_at);
      const window = `${pad(from.getHours())}:${pad(from.getMinutes())}–${pad(to.getHours())}:${pad(to.getMinutes())}`;
      return h("li", { "data-hearing": hearing.id }, this.t("book.link_hearing", {
        hearing: label,
        window,
        mbps: fmt(hearing.expected_mbps),
      }));
    });
    children.push(h("ul", { class: "budget-hearings" }, rows));
    return h("li", { class: "budget-site", "data-site": entry.site_id, "data-over": state }, children);
  }

  async submit() {
    const error = $("bk-error");
    error.hidden = true;
    const body = {
      case_number: $("bk-case").value.trim(),
      kind: $("bk-kind").value,
      courtroom_id: $("bk-room").value,
      starts_at: isoOf($("bk-start").value),
      ends_at: isoOf($("bk-end").value),
      participants: this.people(),
    };
    $("bk-submit").disabled = true;
    const answer = await this.api("POST", "/api/v1/hearings", body);
    $("bk-submit").disabled = false;
    if (!answer.ok) {
      error.textContent = this.problemText(answer);
      error.hidden = false;
      return;
    }
    clearTimeout(this.timer);
    this.generation += 1;
    this.booked = answer.body;
    this.renderResult();
    // The answer has an entry per site that declares a link; the others stay as looked up (not checked).
    const siteIds = [...new Set(body.participants.map((p) => p.site_id))].sort();
    const entries = siteIds
      .map((id) => answer.body.link_budget.find((e) => e.site_id === id) || this.budgets.find((e) => e.site_id === id))
      .filter(Boolean);
    this.renderBudget(entries, "booked");
  }

  renderResult() {
    const booked = this.booked;
    if (!booked) return;
    $("bk-result-heading").textContent = this.t("book.booked", { case_number: booked.case_number });
    $("bk-links").replaceChildren(
      ...booked.participants.map((p) => h("li", {}, `${this.t(`role.${p.role}`)} ${p.name}: `, h("span", { class: "join-url" }, p.join_url))),
    );
    $("bk-result").hidden = false;
  }

  /** The language changed: re-label what this page built from the catalog. */
  relabel() {
    if (document.body.dataset.view !== "form") return;
    const kind = $("bk-kind").value;
    $("bk-kind").replaceChildren(...KINDS.map((k) => h("option", { value: k }, this.t(`kind.${k}`))));
    $("bk-kind").value = kind;
    [...$("bk-people").children].forEach((row, i) => {
      for (const option of row.querySelectorAll(".bk-role option")) option.textContent = this.t(`role.${option.value}`);
      row.querySelector(".bk-name").setAttribute("aria-label", this.t("book.name_of", { n: i + 1 }));
      row.querySelector(".bk-role").setAttribute("aria-label", this.t("book.role_of", { n: i + 1 }));
      row.querySelector(".bk-site").setAttribute("aria-label", this.t("book.site_of", { n: i + 1 }));
      row.querySelector(".bk-remove").textContent = this.t("book.remove");
    });
    this.renderBudget(this.budgets, this.budgetMode || "none", this.budgetError || "");
    this.renderResult();
  }
}

const page = new BookingPage();
window.courtlinkBooking = page;
page.start();
