// Catalog lookup: every visible string of the client comes from signaling/web/i18n/<lang>.json.
// Elements name their string with data-i18n (text), data-i18n-aria (aria-label), data-i18n-title (title).

export const LANGUAGES = ["en", "zh-CN"];
const STORAGE_KEY = "courtlink.lang";

/** The language to start with: an earlier explicit choice, else the browser's preference list. */
export function pickLanguage(preferred = navigator.languages || [navigator.language]) {
  try {
    const saved = localStorage.getItem(STORAGE_KEY);
    if (LANGUAGES.includes(saved)) return saved;
  } catch {
    // Storage may be disabled (private mode, policy): fall back to the browser's languages.
  }
  for (const tag of preferred) {
    const lower = String(tag).toLowerCase();
    if (lower.startsWith("zh")) return "zh-CN";
    if (lower.startsWith("en")) return "en";
  }
  return "en";
}

export class I18n extends EventTarget {
  constructor() {
    super();
    this.lang = "en";
    this.catalog = {};
    this.fallback = {};
  }

  /** Load a catalog (and English as the fallback for any missing key), then re-label the page. */
  async use(lang, { remember = false } = {}) {
    if (!LANGUAGES.includes(lang)) lang = "en";
    const load = async (code) => {
      const response = await fetch(`/static/i18n/${code}.json`, { cache: "no-cache" });
      if (!response.ok) throw new Error(`catalog ${code}: ${response.status}`);
      return response.json();
    };
    if (!Object.keys(this.fallback).length) this.fallback = await load("en");
    this.catalog = lang === "en" ? this.fallback : await load(lang);
    this.lang = lang;
    document.documentElement.lang = lang;
    if (remember) {
      try {
        localStorage.setItem(STORAGE_KEY, lang);
      } catch {
        // Not remembered; the toggle still works for this page.
      }
    }
    this.apply(document);
    this.dispatchEvent(new Event("change"));
  }

  /** The string for key, with {name} placeholders filled from params. */
  t(key, params = {}) {
    let text = this.catalog[key] ?? this.fallback[key];
    if (text === undefined) return key;
    for (const [name, value] of Object.entries(params)) text = text.replaceAll(`{${name}}`, String(value));
    return text;
  }

  /** Whether the catalog has a string for key (used for server codes we may not know). */
  has(key) {
    return key in this.catalog || key in this.fallback;
  }

  /** Re-label every element under root that names a catalog key. */
  apply(root) {
    for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = this.t(el.dataset.i18n);
    for (const el of root.querySelectorAll("[data-i18n-aria]")) el.setAttribute("aria-label", this.t(el.dataset.i18nAria));
    for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = this.t(el.dataset.i18nTitle);
  }
}
