//! `metrics.csv`: one row per logged step of a training run, appended as the run goes; a
//! resumed run keeps the rows up to its checkpoint and appends after them.
//!
//! Columns: `step,epoch,train_loss,train_bpc,val_loss,val_bpc,grad_norm,chars_per_sec,elapsed_s`
//! (losses in nats per character, bpc in bits per character; the validation columns are empty
//! on rows without a validation pass).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The header line.
pub const HEADER: &str =
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
    /// Seconds since the run started (wall clock, summed over resumed sessions).
    pub elapsed_s: f64,
}

impl Row {
    fn to_line(&self) -> String {
        let opt = |v: Option<f64>, f: fn(f64) -> String| v.map(f).unwrap_or_default();
        format!(
            "{},{},{:.6},{:.6},{},{},{:.4},{:.0},{:.2}",
            self.step,
            self.epoch,
            self.train_loss,
            self.train_loss / LN2,
            opt(self.val_loss, |v| format!("{v:.6}")),
            opt(self.val_loss, |v| format!("{:.6}", v / LN2)),
            self.grad_norm,
            self.chars_per_sec,
            self.elapsed_s
        )
    }

    fn parse(line: &str) -> Option<Row> {
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
        Some(Row {
            step: f[0].parse().ok()?,
            epoch: f[1].parse().ok()?,
            train_loss: f[2].parse().ok()?,
            val_loss: opt(f[4])?,
            grad_norm: f[6].parse().ok()?,
            chars_per_sec: f[7].parse().ok()?,
            elapsed_s: f[8].parse().ok()?,
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
            Ok(text) => text
                .lines()
                .skip(1)
                .filter_map(Row::parse)
                .filter(|r| r.step <= step)
                .collect(),
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
        assert_eq!(Row::parse(&r.to_line()), Some(r.clone()));
        let no_val = Row {
            val_loss: None,
            ..r
        };
        assert_eq!(Row::parse(&no_val.to_line()), Some(no_val));
        assert_eq!(Row::parse("12,0,1.5"), None);
    }
}
