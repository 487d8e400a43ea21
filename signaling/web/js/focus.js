// Keyboard focus across re-renders of a list of buttons (the judge's console rebuilds its lists on every roster
// message): focus goes back to the same button if it still exists, else to the next item of that list, else to
// the panel's heading; never to the page body.

/** A button's identity within its item: its `data-action` without the on/off half (mute/unmute). */
function keyOf(button) {
  const action = button.dataset.action || "";
  return action.replace(/^un(?=mute)/, "");
}

function focusable(el) {
  return el && !el.disabled && !el.hidden && el.offsetParent !== null;
}

/** The lists of `root` whose focus is kept: elements with an id that hold the focused control. */
function listOf(el, root) {
  for (let node = el.parentElement; node && node !== root; node = node.parentElement) {
    if (node.id && (node.tagName === "UL" || node.tagName === "OL" || node.classList.contains("button-row"))) return node;
  }
  return null;
}

function itemOf(el, list) {
  let node = el;
  while (node.parentElement && node.parentElement !== list) node = node.parentElement;
  return node.parentElement === list ? node : null;
}

/**
 * Remember where focus is inside `root`; the returned function, called after `root` was re-rendered, puts it
 * back (the same button, else the next item of its list, else the heading of its panel).
 */
export function keepFocus(root) {
  const active = document.activeElement;
  if (!root || !active || active === document.body || !root.contains(active)) return () => {};
  const list = listOf(active, root);
  if (!list) return () => {};
  const item = itemOf(active, list);
  const items = [...list.children];
  const index = items.indexOf(item);
  const pid = item && item.dataset ? item.dataset.participant || "" : "";
  const key = keyOf(active);
  const buttons = item && item !== active ? [...item.querySelectorAll("button")] : [];
  const slot = buttons.indexOf(active);
  const listId = list.id;
  const panel = list.closest("section, aside");
  return () => {
    if (document.activeElement === active && active.isConnected) return;
    const now = document.getElementById(listId);
    if (now) {
      const children = [...now.children];
      // The same button: the same person's item (or the same session button) with the same action or place.
      const same = children.find((c) => (pid ? c.dataset.participant === pid : c === active || keyOf(c) === key));
      if (same) {
        const candidates = same.tagName === "BUTTON" ? [same] : [...same.querySelectorAll("button")];
        const match = candidates.find((b) => key && keyOf(b) === key) || candidates[slot];
        if (focusable(match)) return match.focus();
      }
      // The next item of the list (the one that took its place), then the ones after it, then before it.
      const from = same ? children.indexOf(same) + 1 : Math.max(0, index);
      const order = [...children.slice(from), ...children.slice(0, from).reverse()];
      for (const c of order) {
        const target = c.tagName === "BUTTON" ? c : [...c.querySelectorAll("button")].find(focusable);
        if (focusable(target)) return target.focus();
      }
    }
    const heading = [panel && panel.querySelector("h2, h3"), root.querySelector("h2, h3")].find(
      (el) => el && el.offsetParent !== null,
    );
    if (heading) {
      if (!heading.hasAttribute("tabindex")) heading.setAttribute("tabindex", "-1");
      heading.focus();
    }
    return undefined;
  };
}
