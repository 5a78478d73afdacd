//! The training progress display on stderr: one line redrawn in place on a terminal, plain
//! lines otherwise (a log file, a pipe, CI).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// What the progress line shows. Losses are in bits per character, training and validation
/// alike, so that the two can be compared at a glance.
#[derive(Clone, Copy, Debug, Default)]
pub struct Status {
    /// Steps done.
    pub step: u64,
    /// Steps planned.
    pub total: u64,
    /// Recent training loss, bits per character.
    pub train_bpc: Option<f64>,
    /// Last validation loss, bits per character.
    pub val_bpc: Option<f64>,
    /// Training characters per second.
    pub chars_per_sec: Option<f64>,
    /// Estimated time left.
    pub eta: Option<Duration>,
}

/// Draws [`Status`] lines on stderr.
pub struct Progress {
    tty: bool,
    drawn: bool,
    last_draw: Option<Instant>,
}

/// How often the terminal line is redrawn at most.
const REDRAW: Duration = Duration::from_millis(100);

impl Progress {
    /// A display that redraws in place when stderr is a terminal.
    pub fn new() -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            drawn: false,
            last_draw: None,
        }
    }

    /// Redraws the line (on a terminal, at most every 100 ms unless `force`). Off a terminal
    /// nothing is printed here: see [`Progress::line`].
    pub fn update(&mut self, status: &Status, force: bool) {
        if !self.tty {
            return;
        }
        let now = Instant::now();
        if !force && self.last_draw.is_some_and(|t| now - t < REDRAW) {
            return;
        }
        self.last_draw = Some(now);
        let text = fit(status, terminal_width());
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{text}");
        let _ = err.flush();
        self.drawn = true;
    }

    /// Prints `status` as a plain line off a terminal (on a terminal it only redraws).
    pub fn line(&mut self, status: &Status) {
        if self.tty {
            self.update(status, true);
        } else {
            let _ = writeln!(std::io::stderr().lock(), "{}", plain(status));
        }
    }

    /// Clears the line so that other output can be printed; the next update redraws it.
    pub fn clear(&mut self) {
        if self.tty && self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            self.drawn = false;
        }
    }

    /// Prints a message on its own line(s) on stderr, above the progress line.
    pub fn message(&mut self, text: &str) {
        self.clear();
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    }

    /// Ends the display: the last line stays on a terminal.
    pub fn finish(&mut self) {
        if self.tty && self.drawn {
            let _ = writeln!(std::io::stderr().lock());
            self.drawn = false;
        }
    }
}

/// The fields of a line, most important first: the step and percentage, the losses, the speed,
/// the time left.
fn fields(s: &Status) -> (String, String, Option<String>, Option<String>) {
    let head = format!("step {}/{} {:>3.0}%", s.step, s.total, fraction(s) * 100.0);
    let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let losses = format!("train {} val {} bpc", num(s.train_bpc), num(s.val_bpc));
    let speed = s.chars_per_sec.map(|c| format!("{} char/s", si(c)));
    let eta = s.eta.map(|e| format!("ETA {}", clock(e)));
    (head, losses, speed, eta)
}

/// Steps done over steps planned, in `[0, 1]`.
fn fraction(s: &Status) -> f64 {
    if s.total > 0 {
        (s.step as f64 / s.total as f64).min(1.0)
    } else {
        1.0
    }
}

/// The line printed off a terminal:
/// `step 1200/3000  40% | train 2.326 val 2.351 bpc | 15.2k char/s | ETA 1:10`.
fn plain(s: &Status) -> String {
    let (head, losses, speed, eta) = fields(s);
    let mut parts = vec![head, losses];
    parts.extend(speed);
    parts.extend(eta);
    parts.join(" | ")
}

/// The widest bar drawn, in cells.
const BAR_MAX: usize = 30;
/// Narrower than this, the bar is left out.
const BAR_MIN: usize = 10;

/// The terminal line for a terminal `width` columns wide: at most `width - 1` characters (the
/// last column is left free: writing it makes some terminals wrap), so it never wraps and
/// `\r\x1b[K` always clears it. Fields are dropped from the least important (the bar, then the
/// time left, then the speed); what still does not fit is cut.
///
/// `step 1200/3000 [############..................]  40% | train 2.326 val 2.351 bpc | 15.2k char/s | ETA 1:10`
pub fn fit(s: &Status, width: usize) -> String {
    let limit = width.saturating_sub(1);
    let (head, losses, speed, eta) = fields(s);
    let len = |parts: &[&String]| -> usize {
        parts.iter().map(|p| p.chars().count()).sum::<usize>() + 3 * parts.len().saturating_sub(1)
    };
    let mut tail: Vec<&String> = vec![&losses];
    tail.extend(speed.as_ref());
    tail.extend(eta.as_ref());
    // With the bar: `step a/b [###...] pp%`, the bar taking what room is left.
    let step = format!("step {}/{}", s.step, s.total);
    let pct = format!("{:>3.0}%", fraction(s) * 100.0);
    let without_bar = {
        let mut all = vec![&head];
        all.extend(tail.iter().copied());
        len(&all)
    };
    let room = limit.saturating_sub(without_bar + 3); // " [" and "]"
    if room >= BAR_MIN {
        let n = room.min(BAR_MAX);
        let full = (fraction(s) * n as f64).round() as usize;
        let head = format!(
            "{step} [{}{}] {pct}",
            "#".repeat(full),
            ".".repeat(n - full)
        );
        let mut all = vec![&head];
        all.extend(tail.iter().copied());
        return join(&all);
    }
    // Without it, dropping the time left, then the speed, while the line is too long.
    let mut parts = vec![&head];
    parts.extend(tail.iter().copied());
    while parts.len() > 2 && len(&parts) > limit {
        parts.pop();
    }
    join(&parts).chars().take(limit).collect()
}

/// The parts joined by ` | `.
fn join(parts: &[&String]) -> String {
    parts
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// `15.2k`, `1.05M`, `812`.
fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// `1:05`, `1:02:03`.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// The width of the terminal stderr writes to, asked of the terminal itself (`TIOCGWINSZ`
/// through the `terminal_size` crate, so a resized window is followed at the next redraw);
/// else `$COLUMNS`; else 80.
fn terminal_width() -> usize {
    terminal_size::terminal_size_of(std::io::stderr())
        .map(|(w, _)| usize::from(w.0))
        .filter(|&w| w > 0)
        .or_else(|| std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()))
        .unwrap_or(80)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
            step: 1200,
            total: 3000,
            train_bpc: Some(2.3261),
            val_bpc: Some(2.3512),
            chars_per_sec: Some(15234.0),
            eta: Some(Duration::from_secs(70)),
        }
    }

    #[test]
    fn plain_line_has_every_field_in_one_unit() {
        assert_eq!(
            plain(&status()),
            "step 1200/3000  40% | train 2.326 val 2.351 bpc | 15.2k char/s | ETA 1:10"
        );
        let fresh = Status {
            step: 0,
            total: 10,
            ..Status::default()
        };
        assert_eq!(plain(&fresh), "step 0/10   0% | train - val - bpc");
        assert_eq!(clock(Duration::from_secs(3723)), "1:02:03");
    }

    #[test]
    fn fits_120_columns_with_the_widest_bar() {
        let line = fit(&status(), 120);
        assert_eq!(
            line,
            "step 1200/3000 [############..................]  40% | train 2.326 val 2.351 bpc | 15.2k char/s | ETA 1:10"
        );
        assert!(line.chars().count() < 120);
    }

    #[test]
    fn fits_80_columns_without_the_bar() {
        let line = fit(&status(), 80);
        assert_eq!(line, plain(&status()));
        assert!(line.chars().count() < 80);
        let wider = fit(&status(), 90);
        assert!(wider.contains(" [#####........]  40% "), "{wider}");
        assert_eq!(wider.chars().count(), 89);
    }

    #[test]
    fn narrow_terminals_drop_the_bar_then_the_time_then_the_speed() {
        let s = status();
        assert_eq!(
            fit(&s, 70),
            "step 1200/3000  40% | train 2.326 val 2.351 bpc | 15.2k char/s"
        );
        assert_eq!(
            fit(&s, 63),
            "step 1200/3000  40% | train 2.326 val 2.351 bpc | 15.2k char/s"
        );
        assert_eq!(
            fit(&s, 50),
            "step 1200/3000  40% | train 2.326 val 2.351 bpc"
        );
        assert_eq!(fit(&s, 20), "step 1200/3000  40%");
        for width in 0..200 {
            assert!(
                fit(&s, width).chars().count() < width.max(1),
                "width {width}"
            );
        }
    }
}
