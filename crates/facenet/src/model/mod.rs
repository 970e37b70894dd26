//! Network definitions only: no I/O, no preprocessing.

pub mod inception_resnet_v1;

pub use inception_resnet_v1::{InceptionResnetV1, InceptionResnetV1Config};
