//! The training progress display on stderr: one line redrawn in place on a terminal, plain
//! lines otherwise (a log file, a pipe, CI).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// What the progress line shows.
#[derive(Clone, Copy, Debug, Default)]
pub struct Status {
    /// Steps done.
    pub step: u64,
    /// Steps planned.
    pub total: u64,
    /// Recent training loss, nats per character.
    pub loss: Option<f64>,
    /// Last validation bits per character.
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
        let width = terminal_width();
        let mut text = render(status, true);
        if text.chars().count() >= width {
            text = render(status, false);
            text = text.chars().take(width.saturating_sub(1)).collect();
        }
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
            let _ = writeln!(std::io::stderr().lock(), "{}", render(status, false));
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

/// `step 1200/3000 [#####.....] 40% | loss 1.612 | val 2.351 bpc | 15.2k char/s | ETA 1:10`.
fn render(s: &Status, bar: bool) -> String {
    let mut parts = Vec::new();
    let frac = if s.total > 0 {
        (s.step as f64 / s.total as f64).min(1.0)
    } else {
        1.0
    };
    let mut head = format!("step {}/{}", s.step, s.total);
    if bar {
        let n = 20;
        let full = (frac * n as f64).round() as usize;
        head.push_str(&format!(" [{}{}]", "#".repeat(full), ".".repeat(n - full)));
    }
    head.push_str(&format!(" {:>3.0}%", frac * 100.0));
    parts.push(head);
    if let Some(l) = s.loss {
        parts.push(format!("loss {l:.3}"));
    }
    parts.push(match s.val_bpc {
        Some(v) => format!("val {v:.3} bpc"),
        None => "val -".to_string(),
    });
    if let Some(c) = s.chars_per_sec {
        parts.push(format!("{} char/s", si(c)));
    }
    if let Some(eta) = s.eta {
        parts.push(format!("ETA {}", clock(eta)));
    }
    parts.join(" | ")
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

/// The terminal's width from `$COLUMNS`, else 100.
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|&w: &usize| w >= 20)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_field() {
        let s = Status {
            step: 1200,
            total: 3000,
            loss: Some(1.6123),
            val_bpc: Some(2.3512),
            chars_per_sec: Some(15234.0),
            eta: Some(Duration::from_secs(70)),
        };
        assert_eq!(
            render(&s, true),
            "step 1200/3000 [########............]  40% | loss 1.612 | val 2.351 bpc | 15.2k char/s | ETA 1:10"
        );
        assert_eq!(clock(Duration::from_secs(3723)), "1:02:03");
    }
}
