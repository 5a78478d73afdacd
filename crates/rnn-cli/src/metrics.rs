//! `metrics.csv`: one row per logged step of a training run, appended as the run goes; a
//! resumed run keeps the rows up to its checkpoint and appends after them.
//!
//! Columns: `step,epoch,train_bpc,val_bpc,grad_norm,chars_per_sec,elapsed_s,train_nats,val_nats`:
//! the losses in bits per character, the unit the progress line shows, and again at the end in
//! nats per character (PyTorch's `cross_entropy`, to more digits); the validation columns are
//! empty on rows without a validation pass. A file in the earlier layout
//! (`step,epoch,train_loss,train_bpc,val_loss,val_bpc,...`, nats first) is still read when a run
//! is resumed, and rewritten in this one.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The header line.
pub const HEADER: &str =
    "step,epoch,train_bpc,val_bpc,grad_norm,chars_per_sec,elapsed_s,train_nats,val_nats";

/// The header of the earlier layout, nats first.
const OLD_HEADER: &str =
    "step,epoch,train_loss,train_bpc,val_loss,val_bpc,grad_norm,chars_per_sec,elapsed_s";

const LN2: f64 = std::f64::consts::LN_2;

/// One row.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Steps done.
    pub step: u64,
    /// Epoch of the last step (0-based).
    pub epoch: u64,
    /// Mean training loss over the steps since the previous row, nats per character.
    pub train_loss: f64,
    /// Validation loss, nats per character, when measured at this step.
    pub val_loss: Option<f64>,
    /// Mean gradient norm (before clipping) over the same steps.
    pub grad_norm: f64,
    /// Training characters per second over the same steps.
    pub chars_per_sec: f64,
    /// Seconds since the run started (wall clock, summed over the parts of a resumed run).
    pub elapsed_s: f64,
}

impl Row {
    /// The row as one `--log-json` object: `{"event": "metrics", "step": .., "epoch": ..,
    /// "train_bpc": .., "val_bpc": .. or null, "train_nats": .., "val_nats": .., "grad_norm":
    /// .., "chars_per_sec": .., "elapsed_s": ..}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "event": "metrics",
            "step": self.step,
            "epoch": self.epoch,
            "train_bpc": self.train_loss / LN2,
            "val_bpc": self.val_loss.map(|v| v / LN2),
            "train_nats": self.train_loss,
            "val_nats": self.val_loss,
            "grad_norm": self.grad_norm,
            "chars_per_sec": self.chars_per_sec,
            "elapsed_s": self.elapsed_s,
        })
    }

    fn to_line(&self) -> String {
        let opt = |v: Option<f64>, f: fn(f64) -> String| v.map(f).unwrap_or_default();
        format!(
            "{},{},{:.6},{},{:.4},{:.0},{:.2},{:.8},{}",
            self.step,
            self.epoch,
            self.train_loss / LN2,
            opt(self.val_loss, |v| format!("{:.6}", v / LN2)),
            self.grad_norm,
            self.chars_per_sec,
            self.elapsed_s,
            self.train_loss,
            opt(self.val_loss, |v| format!("{v:.8}")),
        )
    }

    /// A line of this layout (`old`: of the earlier one).
    fn parse(line: &str, old: bool) -> Option<Row> {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 9 {
            return None;
        }
        let opt = |s: &str| -> Option<Option<f64>> {
            if s.is_empty() {
                Some(None)
            } else {
                s.parse().ok().map(Some)
            }
        };
        // Column of: train nats, val nats, grad norm, chars/s, elapsed.
        let [tn, vn, g, c, e] = if old {
            [2, 4, 6, 7, 8]
        } else {
            [7, 8, 4, 5, 6]
        };
        Some(Row {
            step: f[0].parse().ok()?,
            epoch: f[1].parse().ok()?,
            train_loss: f[tn].parse().ok()?,
            val_loss: opt(f[vn])?,
            grad_norm: f[g].parse().ok()?,
            chars_per_sec: f[c].parse().ok()?,
            elapsed_s: f[e].parse().ok()?,
        })
    }
}

/// The metrics file of a run and the rows written so far.
pub struct Metrics {
    path: PathBuf,
    /// Every row, oldest first.
    pub rows: Vec<Row>,
}

impl Metrics {
    /// Starts `path` afresh (header only), atomically.
    pub fn create(path: &Path) -> Result<Metrics> {
        rnn::io::write_atomic(path, format!("{HEADER}\n").as_bytes())?;
        Ok(Metrics {
            path: path.to_path_buf(),
            rows: Vec::new(),
        })
    }

    /// Keeps the rows of `path` up to `step` (a resumed run continues from there) and rewrites
    /// the file with them, atomically. A missing file starts afresh; lines that do not parse (a
    /// line cut by a crash) are dropped.
    pub fn resume(path: &Path, step: u64) -> Result<Metrics> {
        let rows: Vec<Row> = match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut lines = text.lines();
                let old = lines.next() == Some(OLD_HEADER);
                lines
                    .filter_map(|l| Row::parse(l, old))
                    .filter(|r| r.step <= step)
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        let mut text = format!("{HEADER}\n");
        for r in &rows {
            text.push_str(&r.to_line());
            text.push('\n');
        }
        rnn::io::write_atomic(path, text.as_bytes())?;
        Ok(Metrics {
            path: path.to_path_buf(),
            rows,
        })
    }

    /// Appends a row to the file and to [`Metrics::rows`].
    pub fn push(&mut self, row: Row) -> Result<()> {
        let mut f = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot append to {}", self.path.display()))?;
        writeln!(f, "{}", row.to_line())
            .with_context(|| format!("cannot append to {}", self.path.display()))?;
        self.rows.push(row);
        Ok(())
    }

    /// The last validation loss recorded.
    pub fn last_val(&self) -> Option<f64> {
        self.rows.iter().rev().find_map(|r| r.val_loss)
    }

    /// Seconds of training recorded so far.
    pub fn elapsed(&self) -> f64 {
        self.rows.last().map_or(0.0, |r| r.elapsed_s)
    }

    /// The loss curve (bits per character) as an SVG document.
    pub fn svg(&self, title: &str) -> String {
        let train: Vec<(f64, f64)> = self
            .rows
            .iter()
            .map(|r| (r.step as f64, r.train_loss / LN2))
            .collect();
        let val: Vec<(f64, f64)> = self
            .rows
            .iter()
            .filter_map(|r| r.val_loss.map(|v| (r.step as f64, v / LN2)))
            .collect();
        crate::plot::svg(
            title,
            "step",
            "bits per character",
            &[
                crate::plot::Series {
                    name: "training",
                    color: "#1f77b4",
                    points: &train,
                    dots: false,
                },
                crate::plot::Series {
                    name: "validation",
                    color: "#d62728",
                    points: &val,
                    dots: true,
                },
            ],
        )
    }
}

/// `--log-json FILE`: one JSON object per line, written as the run goes (`"event"`: `start`,
/// `metrics`, `best`, `done`). A fresh run starts the file afresh; a resumed run appends to it.
pub struct JsonLog {
    path: PathBuf,
    file: std::fs::File,
}

impl JsonLog {
    /// Starts `path` afresh (a file of that name is replaced).
    pub fn create(path: &Path) -> Result<JsonLog> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("--log-json: cannot create {}", path.display()))?;
        Ok(JsonLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends to `path` (created if missing).
    pub fn append(path: &Path) -> Result<JsonLog> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("--log-json: cannot open {}", path.display()))?;
        Ok(JsonLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Writes `value` as one line.
    pub fn write(&mut self, value: &serde_json::Value) -> Result<()> {
        writeln!(self.file, "{value}")
            .and_then(|()| self.file.flush())
            .with_context(|| format!("--log-json: cannot write to {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip() {
        let r = Row {
            step: 120,
            epoch: 1,
            train_loss: 1.5,
            val_loss: Some(1.75),
            grad_norm: 0.8,
            chars_per_sec: 12345.0,
            elapsed_s: 33.5,
        };
        assert_eq!(Row::parse(&r.to_line(), false), Some(r.clone()));
        assert_eq!(
            r.to_line(),
            "120,1,2.164043,2.524716,0.8000,12345,33.50,1.50000000,1.75000000"
        );
        let no_val = Row {
            val_loss: None,
            ..r.clone()
        };
        assert_eq!(Row::parse(&no_val.to_line(), false), Some(no_val));
        assert_eq!(Row::parse("12,0,1.5", false), None);
        let old = "120,1,1.500000,2.164042,1.750000,2.524716,0.8000,12345,33.50";
        assert_eq!(Row::parse(old, true), Some(r));
    }

    #[test]
    fn resume_reads_the_earlier_layout_and_rewrites_it() {
        let dir = std::env::temp_dir().join(format!("rnn-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.csv");
        std::fs::write(
            &path,
            format!(
                "{OLD_HEADER}\n10,0,1.5,2.16,,,0.8,100,1.0\n20,0,1.25,1.8,1.75,2.5,0.7,100,2.0\n"
            ),
        )
        .unwrap();
        let m = Metrics::resume(&path, 15).unwrap();
        assert_eq!(m.rows.len(), 1);
        assert_eq!(m.rows[0].train_loss, 1.5);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().next(), Some(HEADER));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
