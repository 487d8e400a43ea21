// Small DOM helpers: build elements without innerHTML for anything that carries data from the server.

import { ICONS } from "./icons.js";

/** h("button", {type: "button", class: "btn", onclick}, "text", child) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** A decorative icon element (the icon markup is a constant of this client, never server data). */
export function icon(name) {
  const span = document.createElement("span");
  span.className = "icon-wrap";
  span.setAttribute("aria-hidden", "true");
  span.innerHTML = ICONS[name] || "";
  return span;
}

/** Fill every <span data-icon="name"> placeholder of the static page. */
export function fillIcons(root = document) {
  for (const el of root.querySelectorAll("[data-icon]")) {
    if (!el.firstChild) el.replaceWith(icon(el.dataset.icon));
  }
}

export const $ = (id) => document.getElementById(id);

const signatures = new WeakMap();

/**
 * Render `items` into `container` as keyed rows: the element of an item whose key and signature did not change
 * is kept as it is (not rebuilt), so a button under the pointer, or with the focus, survives a roster update
 * that did not concern its row. `render(item)` makes a new row; `signature(item)` is a string of everything the
 * row shows or acts on (when it changes, the row is made anew).
 */
export function keyed(container, items, key, signature, render) {
  const old = new Map();
  for (const el of container.children) if (el.dataset.key !== undefined) old.set(el.dataset.key, el);
  const next = items.map((item) => {
    const k = String(key(item));
    const sig = signature(item);
    const kept = old.get(k);
    if (kept && signatures.get(kept) === sig) {
      old.delete(k);
      return kept;
    }
    const el = render(item);
    el.dataset.key = k;
    signatures.set(el, sig);
    return el;
  });
  const wanted = new Set(next);
  for (const el of [...container.children]) if (!wanted.has(el)) el.remove();
  next.forEach((el, n) => {
    // Move only what is out of place: a kept row that stays where it is is never detached (it keeps focus).
    if (container.children[n] !== el) container.insertBefore(el, container.children[n] || null);
  });
}
