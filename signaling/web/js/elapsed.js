// Elapsed times shown on the page (a consultation's duration), from the server's unix seconds.

/** Elapsed time since unix seconds `since`, as m:ss or h:mm:ss (never negative). */
export function formatElapsed(since, now = Date.now() / 1000) {
  const total = Math.max(0, Math.floor(now - since));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}
