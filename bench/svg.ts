/**
 * A small hand-written SVG line chart: time of `valueAndGrad` (ours) and of forward + backward (reference)
 * against labels per image, log-log axes.
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

export interface Series {
  name: string;
  color: string;
  /** [labels per image, ms] */
  points: Array<[number, number]>;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function fmtMs(ms: number): string {
  if (ms >= 1000) return `${(ms / 1000).toPrecision(3)} s`;
  if (ms >= 10) return `${ms.toFixed(0)} ms`;
  return `${ms.toPrecision(2)} ms`;
}

/** Axis label of a round value: "10 ms", "200 ms", "1 s", "20 s". */
function tick(ms: number): string {
  const r = (x: number): string => String(Number(x.toPrecision(3)));
  return ms >= 1000 ? `${r(ms / 1000)} s` : `${r(ms)} ms`;
}

export function chart(title: string, subtitle: string, series: Series[], note: string): string {
  const W = 760;
  const H = 470;
  const m = { l: 78, r: 170, t: 64, b: 64 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1])).filter((y) => y > 0);
  const xMin = Math.min(...xs, 8) / 1.5;
  const xMax = Math.max(...xs, 1000) * 1.5;
  const yLo = Math.floor(Math.log10(Math.min(...ys, 10)));
  const yHi = Math.ceil(Math.log10(Math.max(...ys, 100)));
  const X = (x: number): number => m.l + ((Math.log10(x) - Math.log10(xMin)) / (Math.log10(xMax) - Math.log10(xMin))) * pw;
  const Y = (y: number): number => m.t + ph - ((Math.log10(y) - yLo) / (yHi - yLo)) * ph;
  const o: string[] = [];
  o.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  o.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  o.push(`<text x="${m.l}" y="24" font-size="15" font-weight="bold">${esc(title)}</text>`);
  o.push(`<text x="${m.l}" y="44" fill="#555">${esc(subtitle)}</text>`);
  // y grid: decades, with 2 and 5 minor lines
  for (let d = yLo; d <= yHi; d++) {
    for (const f of [1, 2, 5]) {
      const v = f * 10 ** d;
      if (Math.log10(v) > yHi + 1e-9) continue;
      const y = Y(v);
      o.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${y.toFixed(1)}" y2="${y.toFixed(1)}" stroke="${f === 1 ? '#ccc' : '#eee'}"/>`);
      if (f === 1 || yHi - yLo <= 3) {
        o.push(`<text x="${m.l - 8}" y="${(y + 4).toFixed(1)}" text-anchor="end" fill="#333">${esc(tick(v))}</text>`);
      }
    }
  }
  // x ticks at the measured label counts
  for (const x of [...new Set(xs)].sort((a, b) => a - b)) {
    const px = X(x);
    o.push(`<line x1="${px.toFixed(1)}" x2="${px.toFixed(1)}" y1="${m.t}" y2="${m.t + ph}" stroke="#eee"/>`);
    o.push(`<text x="${px.toFixed(1)}" y="${m.t + ph + 18}" text-anchor="middle" fill="#333">${x}</text>`);
  }
  o.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#888"/>`);
  o.push(`<text x="${m.l + pw / 2}" y="${H - 22}" text-anchor="middle">labels per image (log scale)</text>`);
  o.push(`<text transform="translate(18 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle">median time per call (log scale)</text>`);
  series.forEach((s, i) => {
    const pts = [...s.points].sort((a, b) => a[0] - b[0]);
    if (pts.length > 1) {
      o.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2.5" points="${pts.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(' ')}"/>`);
    }
    for (const [x, y] of pts) {
      o.push(`<circle cx="${X(x).toFixed(1)}" cy="${Y(y).toFixed(1)}" r="4" fill="${s.color}"/>`);
      o.push(`<text x="${(X(x) + 6).toFixed(1)}" y="${(Y(y) + (i === 0 ? 16 : -8)).toFixed(1)}" fill="${s.color}">${esc(fmtMs(y))}</text>`);
    }
    const ly = m.t + 20 + i * 22;
    o.push(`<line x1="${m.l + pw + 14}" x2="${m.l + pw + 40}" y1="${ly - 4}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2.5"/>`);
    o.push(`<text x="${m.l + pw + 46}" y="${ly}">${esc(s.name)}</text>`);
  });
  const lines = note.split('\n');
  lines.forEach((line, i) => {
    o.push(`<text x="${m.l + pw + 14}" y="${m.t + 80 + i * 16}" fill="#555" font-size="11">${esc(line)}</text>`);
  });
  o.push('</svg>');
  return o.join('\n') + '\n';
}
