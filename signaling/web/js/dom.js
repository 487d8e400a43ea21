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
