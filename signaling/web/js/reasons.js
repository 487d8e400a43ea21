// Reasons the server gives (denied, removed, close reasons, error codes, recording stops) in the reader's
// language: a code with a `reason.<code>` string is translated, free text is shown as given.

/** `raw` as a reason code: "joined elsewhere" and "hearing_closed" both name a code; null for free text. */
export function reasonCode(raw) {
  const text = String(raw || "").trim();
  if (!/^[a-z][a-z0-9_ -]{0,63}$/.test(text)) return null;
  return text.replace(/[ -]+/g, "_");
}

/** The reason in words: `reason.<code>` in the current language, or the text as given. */
export function reasonText(i18n, raw) {
  const code = reasonCode(raw);
  if (code && i18n.has(`reason.${code}`)) return i18n.t(`reason.${code}`);
  return String(raw || "").trim();
}

/** "by the clerk, Clerk Liu": who removed or refused someone, from `by_role` and `by_name` ("" if unknown). */
export function byWhom(i18n, message, kind) {
  const role = message && message.by_role ? i18n.t(`role.${message.by_role}`) : "";
  const name = message && message.by_name ? message.by_name : "";
  if (!role && !name) return i18n.t(`polish.${kind}_by_court`);
  const roleInSentence = role.toLocaleLowerCase(i18n.lang);
  if (role && name) return i18n.t(`polish.${kind}_by`, { role: roleInSentence, name });
  return i18n.t(`polish.${kind}_by_one`, { who: role ? roleInSentence : name });
}
