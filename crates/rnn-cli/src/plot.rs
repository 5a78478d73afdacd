//! The loss curve as a hand-written SVG: training and validation bits per character against
//! the step, with axes, ticks, a grid and a legend.

use std::fmt::Write;

/// A named series of `(x, y)` points and its colour.
pub struct Series<'a> {
    /// Legend text.
    pub name: &'a str,
    /// CSS colour.
    pub color: &'a str,
    /// Points, in increasing x.
    pub points: &'a [(f64, f64)],
    /// Draw a dot at each point (for sparse series).
    pub dots: bool,
}

const W: f64 = 760.0;
const H: f64 = 420.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 52.0;

/// An SVG document plotting `series` under `title`, with axis labels.
pub fn svg(title: &str, x_label: &str, y_label: &str, series: &[Series<'_>]) -> String {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let finite = |v: &f64| v.is_finite();
    let xs: Vec<f64> = all().map(|p| p.0).filter(finite).collect();
    let ys: Vec<f64> = all().map(|p| p.1).filter(finite).collect();
    let (x0, x1) = range(&xs, 0.0, 1.0);
    let (y0, y1) = range(&ys, 0.0, 1.0);
    let xt = ticks(x0.min(0.0), x1, 8);
    let yt = ticks(y0, y1, 6);
    let (xa, xb) = (xt[0], *xt.last().expect("ticks"));
    let (ya, yb) = (yt[0], *yt.last().expect("ticks"));
    let px = |x: f64| LEFT + (x - xa) / (xb - xa) * (W - LEFT - RIGHT);
    let py = |y: f64| H - BOTTOM - (y - ya) / (yb - ya) * (H - TOP - BOTTOM);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    for &t in &yt {
        let y = py(t);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            label(t)
        );
    }
    for &t in &xt {
        let x = px(t);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#efefef"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 16.0,
            label(t)
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}" fill="none" stroke="black"/>"#,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 12.0,
        escape(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        (TOP + H - BOTTOM) / 2.0,
        escape(y_label)
    );
    for (k, ser) in series.iter().enumerate() {
        let pts: Vec<String> = ser
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        if !pts.is_empty() {
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.6" points="{}"/>"#,
                ser.color,
                pts.join(" ")
            );
        }
        if ser.dots {
            for p in &pts {
                let (x, y) = p.split_once(',').expect("x,y");
                let _ = writeln!(
                    s,
                    r#"<circle cx="{x}" cy="{y}" r="3" fill="{}"/>"#,
                    ser.color
                );
            }
        }
        let ly = TOP + 16.0 + 18.0 * k as f64;
        let lx = W - RIGHT - 170.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            ly - 4.0,
            lx + 24.0,
            ly - 4.0,
            ser.color,
            lx + 30.0,
            ly,
            escape(ser.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The range of `v`, or `(lo, hi)` when empty; widened when flat.
fn range(v: &[f64], lo: f64, hi: f64) -> (f64, f64) {
    if v.is_empty() {
        return (lo, hi);
    }
    let a = v.iter().copied().fold(f64::INFINITY, f64::min);
    let b = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if b - a < 1e-9 {
        (a - 0.5, b + 0.5)
    } else {
        (a, b)
    }
}

/// About `n` round tick values covering `[a, b]` (steps of 1, 2 or 5 times a power of ten).
fn ticks(a: f64, b: f64, n: usize) -> Vec<f64> {
    let raw = (b - a) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let start = (a / step).floor() * step;
    let mut out = vec![start];
    while *out.last().expect("non-empty") < b - 1e-9 * step.abs() {
        let next = start + step * out.len() as f64;
        out.push(next);
    }
    if out.len() < 2 {
        out.push(start + step);
    }
    out
}

/// A tick label: integers plainly, others with up to 2 decimals.
fn label(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Escapes text for SVG.
fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            ticks(0.0, 3000.0, 8),
            [0.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0]
        );
        let t = ticks(1.37, 4.2, 6);
        assert!(t[0] <= 1.37 && *t.last().unwrap() >= 4.2, "{t:?}");
    }

    #[test]
    fn svg_has_both_series() {
        let train = [(10.0, 4.0), (20.0, 3.0), (30.0, 2.5)];
        let val = [(30.0, 2.7)];
        let doc = svg(
            "loss <run>",
            "step",
            "bits per character",
            &[
                Series {
                    name: "train",
                    color: "#1f77b4",
                    points: &train,
                    dots: false,
                },
                Series {
                    name: "validation",
                    color: "#d62728",
                    points: &val,
                    dots: true,
                },
            ],
        );
        assert!(doc.starts_with("<svg") && doc.ends_with("</svg>\n"));
        assert_eq!(doc.matches("<polyline").count(), 2);
        assert!(doc.contains("loss &lt;run&gt;"));
    }
}
