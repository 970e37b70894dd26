//! Verification metrics on pair distances, following davidsandberg's `facenet.calculate_roc`
//! and `calculate_val` (the FaceNet paper's protocol), with folds given explicitly.
//!
//! - accuracy: for each fold, the threshold that maximizes accuracy on the other folds is
//!   applied to it; mean and (population) std over folds.
//! - VAL@FAR: for each fold, the threshold giving the target FAR on the other folds (linear
//!   interpolation along the threshold grid) is applied to it.
//! - ROC over all pairs, its AUC (trapezoid) and EER (where FAR = 1 - TAR).

use serde::{Deserialize, Serialize};

/// A point of the ROC curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RocPoint {
    /// Distance threshold (a pair is "same" when distance < threshold).
    pub threshold: f64,
    /// False accept rate.
    pub far: f64,
    /// True accept rate.
    pub tar: f64,
}

/// Everything [`evaluate`] computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Mean of the per-fold accuracies.
    pub accuracy: f64,
    /// Their population standard deviation.
    pub accuracy_std: f64,
    /// Per-fold thresholds chosen on the training folds.
    pub fold_thresholds: Vec<f64>,
    /// Mean TAR at the target FAR.
    pub val: f64,
    /// Its standard deviation.
    pub val_std: f64,
    /// Mean FAR achieved at those thresholds.
    pub far: f64,
    /// The FAR target.
    pub far_target: f64,
    /// Area under the ROC curve.
    pub auc: f64,
    /// Equal error rate.
    pub eer: f64,
    /// The threshold with the best accuracy over all pairs.
    pub best_threshold: f64,
    /// That accuracy.
    pub best_accuracy: f64,
    /// The threshold with FAR at most the target over all pairs, and its TAR.
    pub threshold_at_far: f64,
    /// TAR at `threshold_at_far` over all pairs.
    pub tar_at_far: f64,
    /// The ROC curve over all pairs (one point per grid threshold).
    pub roc: Vec<RocPoint>,
}

/// `(true accepts, false accepts, positives, negatives)` at `threshold` over the selected pairs.
fn counts(
    dist: &[f64],
    same: &[bool],
    keep: &dyn Fn(usize) -> bool,
    threshold: f64,
) -> (f64, f64, f64, f64) {
    let (mut ta, mut fa, mut p, mut n) = (0.0, 0.0, 0.0, 0.0);
    for i in (0..dist.len()).filter(|&i| keep(i)) {
        let accept = dist[i] < threshold;
        if same[i] {
            p += 1.0;
            if accept {
                ta += 1.0;
            }
        } else {
            n += 1.0;
            if accept {
                fa += 1.0;
            }
        }
    }
    (ta, fa, p, n)
}

fn accuracy(dist: &[f64], same: &[bool], keep: &dyn Fn(usize) -> bool, t: f64) -> f64 {
    let (ta, fa, p, n) = counts(dist, same, keep, t);
    let total = p + n;
    if total == 0.0 {
        0.0
    } else {
        (ta + (n - fa)) / total
    }
}

fn rates(dist: &[f64], same: &[bool], keep: &dyn Fn(usize) -> bool, t: f64) -> (f64, f64) {
    let (ta, fa, p, n) = counts(dist, same, keep, t);
    (
        if n == 0.0 { 0.0 } else { fa / n },
        if p == 0.0 { 0.0 } else { ta / p },
    )
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    (
        m,
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt(),
    )
}

/// Threshold whose FAR on the selected pairs equals `target`, interpolated along the grid;
/// 0 when no threshold reaches the target (as davidsandberg).
fn threshold_for_far(
    dist: &[f64],
    same: &[bool],
    keep: &dyn Fn(usize) -> bool,
    grid: &[f64],
    target: f64,
) -> f64 {
    let fars: Vec<f64> = grid.iter().map(|&t| rates(dist, same, keep, t).0).collect();
    if fars.iter().cloned().fold(0.0, f64::max) < target {
        return 0.0;
    }
    let i = fars.iter().position(|&f| f >= target).unwrap_or(0);
    if i == 0 || fars[i] == fars[i - 1] {
        return grid[i];
    }
    let (f0, f1) = (fars[i - 1], fars[i]);
    grid[i - 1] + (target - f0) / (f1 - f0) * (grid[i] - grid[i - 1])
}

/// Evaluates distances of labelled pairs with given folds.
///
/// `grid` is the threshold sweep (davidsandberg: 0 to 4 step 0.01 on squared L2).
pub fn evaluate(
    dist: &[f64],
    same: &[bool],
    folds: &[usize],
    grid: &[f64],
    far_target: f64,
) -> Evaluation {
    assert_eq!(dist.len(), same.len());
    assert_eq!(dist.len(), folds.len());
    let num_folds = folds.iter().copied().max().map_or(0, |m| m + 1);
    let (mut accs, mut fold_thresholds, mut vals, mut fars) = (vec![], vec![], vec![], vec![]);
    for k in 0..num_folds {
        let train = |i: usize| num_folds == 1 || folds[i] != k;
        let test = |i: usize| folds[i] == k;
        let best = grid
            .iter()
            .copied()
            .max_by(|&a, &b| {
                accuracy(dist, same, &train, a)
                    .total_cmp(&accuracy(dist, same, &train, b))
                    // numpy argmax keeps the first maximum: prefer the smaller threshold.
                    .then(b.total_cmp(&a))
            })
            .unwrap_or(0.0);
        fold_thresholds.push(best);
        accs.push(accuracy(dist, same, &test, best));
        let t = threshold_for_far(dist, same, &train, grid, far_target);
        let (far, tar) = rates(dist, same, &test, t);
        vals.push(tar);
        fars.push(far);
    }
    let (accuracy_mean, accuracy_std) = mean_std(&accs);
    let (val, val_std) = mean_std(&vals);
    let (far, _) = mean_std(&fars);
    let all = |_: usize| true;
    let roc: Vec<RocPoint> = grid
        .iter()
        .map(|&t| {
            let (far, tar) = rates(dist, same, &all, t);
            RocPoint {
                threshold: t,
                far,
                tar,
            }
        })
        .collect();
    let (auc, eer) = auc_eer(dist, same);
    let (best_threshold, best_accuracy) = grid
        .iter()
        .map(|&t| (t, accuracy(dist, same, &all, t)))
        .fold((0.0, -1.0), |b, x| if x.1 > b.1 { x } else { b });
    let threshold_at_far = threshold_for_far(dist, same, &all, grid, far_target);
    let (_, tar_at_far) = rates(dist, same, &all, threshold_at_far);
    Evaluation {
        accuracy: accuracy_mean,
        accuracy_std,
        fold_thresholds,
        val,
        val_std,
        far,
        far_target,
        auc,
        eer,
        best_threshold,
        best_accuracy,
        threshold_at_far,
        tar_at_far,
        roc,
    }
}

/// AUC and EER from the exact ROC over all distinct distances.
pub fn auc_eer(dist: &[f64], same: &[bool]) -> (f64, f64) {
    let p = same.iter().filter(|&&s| s).count() as f64;
    let n = same.len() as f64 - p;
    if p == 0.0 || n == 0.0 {
        return (f64::NAN, f64::NAN);
    }
    let mut order: Vec<usize> = (0..dist.len()).collect();
    order.sort_by(|&a, &b| dist[a].total_cmp(&dist[b]));
    // Accept pairs in increasing distance; ties enter together.
    let mut pts = vec![(0.0f64, 0.0f64)];
    let (mut ta, mut fa) = (0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let d = dist[order[i]];
        while i < order.len() && dist[order[i]] == d {
            if same[order[i]] {
                ta += 1.0
            } else {
                fa += 1.0
            }
            i += 1;
        }
        pts.push((fa / n, ta / p));
    }
    let auc = pts
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
        .sum();
    // EER: where FAR crosses 1 - TAR (FRR), linear between ROC points.
    let mut eer = 1.0;
    for w in pts.windows(2) {
        let g0 = w[0].0 - (1.0 - w[0].1);
        let g1 = w[1].0 - (1.0 - w[1].1);
        if g0 <= 0.0 && g1 >= 0.0 {
            let t = if g1 == g0 { 0.0 } else { -g0 / (g1 - g0) };
            eer = w[0].0 + t * (w[1].0 - w[0].0);
            break;
        }
    }
    (auc, eer)
}

/// The threshold grid for a metric: davidsandberg's 0..4 step 0.01 on squared L2, and the
/// same 400 steps over 0..2 for L2 and cosine distance.
pub fn grid(max: f64) -> Vec<f64> {
    (0..400).map(|i| i as f64 * max / 400.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfectly_separable() {
        // Each fold: same pairs at 0.1 and 0.4, different at 1.1 and 1.4.
        let dist = [0.1, 0.4, 1.1, 1.4, 0.1, 0.4, 1.1, 1.4];
        let same = [true, true, false, false, true, true, false, false];
        let folds = [0, 0, 0, 0, 1, 1, 1, 1];
        let e = evaluate(&dist, &same, &folds, &grid(2.0), 1e-3);
        assert_eq!(e.accuracy, 1.0);
        assert_eq!(e.accuracy_std, 0.0);
        assert_eq!(e.auc, 1.0);
        assert_eq!(e.eer, 0.0);
        // Best threshold: the first grid value above 0.4 on the training fold (0.405).
        assert!(
            (e.fold_thresholds[0] - 0.405).abs() < 1e-9,
            "{:?}",
            e.fold_thresholds
        );
        assert_eq!(e.val, 1.0);
    }

    #[test]
    fn thresholds_are_chosen_on_the_other_folds() {
        // Fold 0 has same pairs at 0.1, 0.2; fold 1 at 0.3, 0.4; different pairs far away.
        // Fold 1 is tested with the threshold learnt on fold 0 (first t > 0.2 = 0.205), which
        // rejects its same pairs: accuracy 0.5 there, 1.0 on fold 0, mean 0.75, std 0.25.
        let dist = [0.1, 0.2, 1.1, 1.2, 0.3, 0.4, 1.3, 1.4];
        let same = [true, true, false, false, true, true, false, false];
        let folds = [0, 0, 0, 0, 1, 1, 1, 1];
        let e = evaluate(&dist, &same, &folds, &grid(2.0), 1e-3);
        assert_eq!(e.accuracy, 0.75);
        assert_eq!(e.accuracy_std, 0.25);
        assert_eq!(e.best_accuracy, 1.0);
    }

    #[test]
    fn accuracy_by_hand_with_overlap() {
        // One fold; threshold sweep: best is between 0.3 and 0.5 -> 3 of 4 correct... worked:
        // same: 0.2, 0.6; different: 0.5, 0.9. t in (0.2, 0.5]: accept 0.2 only -> correct:
        // same 0.2 yes, same 0.6 no, diff 0.5 rejected yes, diff 0.9 yes = 3/4.
        let dist = [0.2, 0.6, 0.5, 0.9];
        let same = [true, true, false, false];
        let e = evaluate(&dist, &same, &[0, 0, 0, 0], &grid(2.0), 0.5);
        assert_eq!(e.accuracy, 0.75);
        assert_eq!(e.best_accuracy, 0.75);
        // ROC points: (0,0) (0,.5) (.5,.5) (.5,1) (1,1): AUC = 0.5*0.5 + 0.5*1 = 0.75.
        assert!((e.auc - 0.75).abs() < 1e-12);
        // EER: FAR = FRR = 0.5.
        assert!((e.eer - 0.5).abs() < 1e-12);
    }

    #[test]
    fn threshold_for_far_interpolates() {
        // Different-pair distances 1..=10 (FAR steps of 0.1). Target FAR 0.25 lies between
        // thresholds where FAR is 0.2 and 0.3.
        let dist: Vec<f64> = (1..=10).map(|d| d as f64).collect();
        let same = vec![false; 10];
        let g: Vec<f64> = (0..=12).map(|i| i as f64).collect();
        let keep = |_: usize| true;
        // FAR(t) = #(d < t)/10: FAR(2)=0.1, FAR(3)=0.2, FAR(4)=0.3 -> t = 3.5.
        let t = threshold_for_far(&dist, &same, &keep, &g, 0.25);
        assert!((t - 3.5).abs() < 1e-12, "{t}");
        assert_eq!(threshold_for_far(&dist, &same, &keep, &g[..1], 0.25), 0.0);
    }
}
