// The network check's verdict: good / okay / poor from what the check measured (docs/web-client.md, "Network
// check"). Each measured figure gets a grade; the verdict is the worst of them. Figures not measured are not graded.

/**
 * Thresholds, for a detention-center terminal on a 20 Mbit/s link shared by up to four hearings (5 Mbit/s each):
 * "good" holds a 720p call (camera about 1.5 Mbit/s up, the stage and a few tiles down), "okay" a 360p call
 * (about 0.5 Mbit/s each way), anything less is "poor".
 */
export const THRESHOLDS = Object.freeze({
  rtt_ms: { good: 150, okay: 300 }, // round trip at most
  loss_pct: { good: 1, okay: 3 }, // packets lost at most
  up_mbps: { good: 1.5, okay: 0.5 }, // sent at least, graded only when the browser says bandwidth limited it
  down_ratio: { good: 0.9, okay: 0.6 }, // share of what was sent that came back at least
});

const ORDER = ["good", "okay", "poor"];

function atMost(value, limits) {
  if (value <= limits.good) return "good";
  return value <= limits.okay ? "okay" : "poor";
}

function atLeast(value, limits) {
  if (value >= limits.good) return "good";
  return value >= limits.okay ? "okay" : "poor";
}

/**
 * The verdict of one check result `{ok, media, rtt (ms), up, down (Mbit/s), loss (0..1), limited (bool)}`:
 * `{verdict, grades}` with `grades` naming the grade of each measured figure; a failed check is "poor".
 */
export function verdict(result) {
  if (!result || !result.ok) return { verdict: "poor", grades: { reach: "poor" } };
  const grades = {};
  if (typeof result.rtt === "number") grades.rtt = atMost(result.rtt, THRESHOLDS.rtt_ms);
  if (result.media) {
    if (typeof result.loss === "number") grades.loss = atMost(result.loss * 100, THRESHOLDS.loss_pct);
    // The camera decides how much is sent: only a sender held back by the network says the uplink is short.
    if (typeof result.up === "number") grades.up = result.limited ? atLeast(result.up, THRESHOLDS.up_mbps) : "good";
    if (typeof result.up === "number" && typeof result.down === "number" && result.up > 0) {
      grades.down = atLeast(result.down / result.up, THRESHOLDS.down_ratio);
    }
  }
  const worst = Object.values(grades).reduce((a, g) => (ORDER.indexOf(g) > ORDER.indexOf(a) ? g : a), "good");
  return { verdict: worst, grades };
}
