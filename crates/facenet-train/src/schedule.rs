//! Learning-rate schedules from a file, as davidsandberg's `learning_rate_schedule_*.txt`:
//! lines `epoch: lr`, `#` comments; the rate of the last line whose epoch is at most the
//! current one applies.

use std::path::Path;

use facenet::error::{Error, ParseError, Result};

/// A piecewise-constant schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct LearningRateSchedule {
    /// `(first epoch, rate)`, sorted by epoch.
    pub steps: Vec<(usize, f64)>,
}

impl LearningRateSchedule {
    /// A constant rate.
    pub fn constant(lr: f64) -> Self {
        Self {
            steps: vec![(0, lr)],
        }
    }

    /// Parses the text of a schedule file.
    pub fn parse(text: &str) -> std::result::Result<Self, ParseError> {
        let mut steps = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (e, lr) = line.split_once(':').ok_or_else(|| {
                ParseError::at(i + 1, format!("expected `epoch: rate`, got `{line}`"))
            })?;
            let e: usize = e.trim().parse().map_err(|_| {
                ParseError::at(i + 1, format!("`{}` is not an epoch number", e.trim()))
            })?;
            let lr: f64 = lr
                .trim()
                .parse()
                .map_err(|_| ParseError::at(i + 1, format!("`{}` is not a rate", lr.trim())))?;
            steps.push((e, lr));
        }
        if steps.is_empty() {
            return Err(ParseError::at(0, "no `epoch: rate` line"));
        }
        steps.sort_by_key(|s| s.0);
        Ok(Self { steps })
    }

    /// Reads a schedule file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text).map_err(|source| Error::Parse {
            path: path.into(),
            source,
        })
    }

    /// The rate at `epoch`.
    pub fn at(&self, epoch: usize) -> f64 {
        self.steps
            .iter()
            .take_while(|(e, _)| *e <= epoch)
            .last()
            .map_or(self.steps[0].1, |s| s.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_lookup() {
        let s = LearningRateSchedule::parse("# comment\n0: 0.1\n65: 0.01\n77: 0.001  # last\n")
            .unwrap();
        assert_eq!(s.at(0), 0.1);
        assert_eq!(s.at(64), 0.1);
        assert_eq!(s.at(65), 0.01);
        assert_eq!(s.at(1000), 0.001);
        assert!(
            LearningRateSchedule::parse("0 0.1")
                .unwrap_err()
                .to_string()
                .contains("line 1")
        );
        assert!(LearningRateSchedule::parse("").is_err());
    }
}
