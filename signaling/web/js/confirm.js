// An accessible confirmation dialog (<dialog> shown modal): the question is its label, Escape or "Stay" cancels,
// Tab stays inside it, and focus returns to the control that opened it.

import { $ } from "./dom.js";

/**
 * Ask `question` (with `detail` below it); resolves true when the person confirms. `confirmLabel` and
 * `cancelLabel` are the two buttons' texts; the cancel button has the focus first (the safe choice).
 */
export function confirmDialog({ question, detail = "", confirmLabel, cancelLabel }) {
  const dialog = $("confirm-dialog");
  const ok = $("confirm-ok");
  const cancel = $("confirm-cancel");
  const opener = document.activeElement;
  $("confirm-question").textContent = question;
  $("confirm-detail").textContent = detail;
  $("confirm-detail").hidden = !detail;
  ok.textContent = confirmLabel;
  cancel.textContent = cancelLabel;
  return new Promise((resolve) => {
    let answered = false;
    const trap = (event) => {
      if (event.key !== "Tab") return;
      const order = [cancel, ok];
      const at = order.indexOf(document.activeElement);
      event.preventDefault();
      const next = at < 0 ? 0 : (at + (event.shiftKey ? order.length - 1 : 1)) % order.length;
      order[next].focus();
    };
    const finish = (value) => {
      if (answered) return;
      answered = true;
      dialog.removeEventListener("keydown", trap);
      dialog.removeEventListener("cancel", onCancel);
      dialog.removeEventListener("close", onClose);
      ok.onclick = null;
      cancel.onclick = null;
      if (dialog.open) dialog.close();
      if (opener && opener.isConnected && opener.offsetParent !== null && typeof opener.focus === "function") {
        opener.focus();
      }
      resolve(value);
    };
    const onCancel = (event) => {
      event.preventDefault(); // we close it ourselves, so focus goes back to the opener
      finish(false);
    };
    const onClose = () => finish(false);
    dialog.addEventListener("keydown", trap);
    dialog.addEventListener("cancel", onCancel);
    dialog.addEventListener("close", onClose);
    ok.onclick = () => finish(true);
    cancel.onclick = () => finish(false);
    dialog.showModal();
    cancel.focus();
  });
}
