//! Validation curves of training runs, read back from their `log.jsonl`: accuracy against
//! steps and against training time, for `facenet curves` and docs/training.md.

use std::path::Path;

use facenet::error::{Error, ParseError, Result};

/// One validation of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    /// Optimizer steps done.
    pub step: usize,
    /// Seconds spent in those steps (the sum of the log's `step_seconds`; validation itself
    /// is not counted).
    pub train_seconds: f64,
    /// Verification accuracy on the validation pairs at the best threshold.
    pub val_accuracy: f64,
}

/// The validations of the run in `run_dir` (its `log.jsonl`), in step order. A line that is
/// not a JSON object, or whose fields have the wrong types, is an error naming the line.
pub fn read_curve(run_dir: &Path) -> Result<Vec<CurvePoint>> {
    let path = run_dir.join("log.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let bad = |line: usize, reason: String| Error::Parse {
        path: path.clone(),
        source: ParseError::at(line, reason),
    };
    let mut points = Vec::new();
    let mut seconds = 0.0;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(i + 1, format!("not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad(i + 1, "not a JSON object".into()))?;
        let number = |key: &str| -> Result<Option<f64>> {
            match obj.get(key) {
                None => Ok(None),
                Some(x) => x
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| bad(i + 1, format!("`{key}` is not a number"))),
            }
        };
        seconds += number("step_seconds")?.unwrap_or(0.0);
        let Some(acc) = number("val_accuracy")? else {
            continue;
        };
        let step = obj
            .get("step")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| bad(i + 1, "`step` missing or not a whole number".into()))?;
        // A step's entry counts the step itself; the initial validation (step 0, no
        // `step_seconds`) is before any.
        let done = if obj.contains_key("step_seconds") {
            step as usize + 1
        } else {
            step as usize
        };
        points.push(CurvePoint {
            step: done,
            train_seconds: seconds,
            val_accuracy: acc,
        });
    }
    Ok(points)
}

/// The curve of a run that started from the end of `first` (`facenet train --init-weights
/// FIRST/checkpoint/model.safetensors`, e.g. triplet fine-tuning after softmax pre-training):
/// `first`'s points, then `then`'s with their steps and seconds counted on from `first`'s
/// last point. `then`'s initial validation (step 0) repeats `first`'s last and is left out.
pub fn chain_curves(first: &[CurvePoint], then: &[CurvePoint]) -> Vec<CurvePoint> {
    let (step0, secs0) = first.last().map_or((0, 0.0), |p| (p.step, p.train_seconds));
    first
        .iter()
        .copied()
        .chain(
            then.iter()
                .filter(|p| p.step > 0 || first.is_empty())
                .map(|p| CurvePoint {
                    step: step0 + p.step,
                    train_seconds: secs0 + p.train_seconds,
                    val_accuracy: p.val_accuracy,
                }),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chained_run_counts_on_from_the_first() {
        let p = |step, train_seconds, val_accuracy| CurvePoint {
            step,
            train_seconds,
            val_accuracy,
        };
        let first = [p(0, 0.0, 0.5), p(100, 60.0, 0.8)];
        let then = [p(0, 0.0, 0.8), p(50, 90.0, 0.85), p(100, 180.0, 0.9)];
        let c = chain_curves(&first, &then);
        assert_eq!(
            c,
            vec![
                p(0, 0.0, 0.5),
                p(100, 60.0, 0.8),
                p(150, 150.0, 0.85),
                p(200, 240.0, 0.9)
            ]
        );
        assert_eq!(chain_curves(&[], &then), then.to_vec());
    }

    #[test]
    fn reads_validations_with_cumulative_time_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = [
            r#"{"step":0,"val_accuracy":0.5,"val_at_far":0.0}"#,
            r#"{"step":0,"loss":1.0,"step_seconds":0.5}"#,
            r#"{"step":1,"loss":0.9,"step_seconds":0.25,"val_accuracy":0.6,"val_at_far":0.01}"#,
            "",
            r#"{"step":2,"loss":0.8,"step_seconds":1.0}"#,
            r#"{"step":3,"loss":0.7,"step_seconds":0.25,"val_accuracy":0.7}"#,
        ];
        std::fs::write(dir.path().join("log.jsonl"), log.join("\n")).unwrap();
        let c = read_curve(dir.path()).unwrap();
        let want = [(0, 0.0, 0.5), (2, 0.75, 0.6), (4, 2.0, 0.7)];
        assert_eq!(c.len(), want.len());
        for (p, (step, secs, acc)) in c.iter().zip(want) {
            assert_eq!((p.step, p.val_accuracy), (step, acc));
            assert!((p.train_seconds - secs).abs() < 1e-12, "{p:?}");
        }
        std::fs::write(
            dir.path().join("log.jsonl"),
            "{\"step\":0,\"val_accuracy\":0.5}\n{\"step\":1,\"val_accuracy\":\"high\"}\n",
        )
        .unwrap();
        let err = read_curve(dir.path()).unwrap_err();
        let msg = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(
            msg.contains("log.jsonl") && msg.contains("line 2") && msg.contains("val_accuracy"),
            "{msg}"
        );
        assert!(read_curve(&dir.path().join("missing")).is_err());
    }
}
