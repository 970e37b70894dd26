//! Training: triplet loss through one shared network with online triplet mining (FaceNet),
//! and softmax + center loss (Wen et al. 2016, davidsandberg's classifier training).
//!
//! **Why one network suffices.** Anchor, positive and negative are stacked into one batch and
//! pass through the *same* weights; autodiff keeps the activations of every image's forward
//! pass. The loss depends on the weights through all three embeddings, so its gradient is the
//! sum of three terms, one per role, each computed from that image's own activations.
//! Running A, P and N through three copies of the network and adding the copies' gradients
//! gives exactly the same number (tested in `tests::shared_gradient_is_sum_of_branch_gradients`).
//!
//! ```text
//! facenet train --data aligned/ --loss triplet --model small --out runs/exp1
//! ```
//!
//! A crate of its own above `facenet`: the fronts that only recognise faces (the service, the
//! Python package) do not compile it.
#![deny(missing_docs)]

pub mod curve;
pub mod loss;
pub mod mining;
pub mod sampler;
pub mod schedule;
pub mod trainer;

pub use curve::{CurvePoint, chain_curves, read_curve};
pub use loss::{CenterLoss, triplet_loss};
pub use mining::{Selection, Triplet, select_triplets};
pub use sampler::{Rng, sample_people};
pub use schedule::LearningRateSchedule;
pub use trainer::{Init, Loss, Optimizer, TrainConfig, Trainer, triplet_step};
