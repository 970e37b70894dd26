//! Verification protocol: pairs files (LFW and the like) and the metrics of the FaceNet paper
//! (10-fold accuracy, VAL@FAR, ROC, AUC, EER). Pure functions, no I/O beyond reading the
//! pairs file.
//!
//! ```text
//! facenet evaluate --pairs lfw-protocol/pairs.txt --images lfw/ --out report/
//! ```

pub mod calibrate;
pub mod cohort;
pub mod metrics;
pub mod openset;
pub mod pairs;
pub mod pca;
pub mod protocol;

pub use metrics::{Evaluation, RocPoint, evaluate};
pub use pairs::{Pair, Pairs};
