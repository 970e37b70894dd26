//! Network definitions only: no I/O, no preprocessing.

pub mod inception_resnet_v1;
pub mod mtcnn;

pub use inception_resnet_v1::{InceptionResnetV1, InceptionResnetV1Config, Preset};
