//! Online triplet selection on the embeddings of one sampled batch.
//!
//! All distances are squared L2 between unit embeddings. For each anchor-positive pair
//! (every ordered pair of images of one person):
//! - [`Selection::SemiHard`] (FaceNet): a random negative with
//!   `d(a,p) < d(a,n) < d(a,p) + alpha`: farther than the positive, but inside the margin.
//! - [`Selection::MarginViolators`] (davidsandberg `select_triplets`): a random negative with
//!   `d(a,n) - d(a,p) < alpha` (this includes negatives closer than the positive).
//! - [`Selection::Hard`]: the closest negative.
//! - [`Selection::BatchAll`]: every negative that violates the margin.

use serde::{Deserialize, Serialize};

use super::sampler::Rng;

/// How triplets are chosen.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// FaceNet's semi-hard negatives.
    #[default]
    SemiHard,
    /// davidsandberg's: any negative within the margin, chosen at random.
    MarginViolators,
    /// The hardest negative.
    Hard,
    /// All margin-violating negatives.
    BatchAll,
}

/// Indices into the batch: anchor, positive, negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Triplet {
    /// Anchor.
    pub a: usize,
    /// Positive (same person).
    pub p: usize,
    /// Negative (another person).
    pub n: usize,
}

fn sq(x: &[f32], y: &[f32]) -> f32 {
    x.iter().zip(y).map(|(u, v)| (u - v) * (u - v)).sum()
}

/// Selects triplets. Anchor-positive pairs are taken with `a < p` in batch order; `rng`
/// makes the random choices reproducible.
pub fn select_triplets(
    emb: &[Vec<f32>],
    labels: &[usize],
    alpha: f32,
    strategy: Selection,
    rng: &mut Rng,
) -> Vec<Triplet> {
    let n = emb.len();
    let mut out = Vec::new();
    for a in 0..n {
        for p in a + 1..n {
            if labels[p] != labels[a] {
                continue;
            }
            let dap = sq(&emb[a], &emb[p]);
            let negs: Vec<(usize, f32)> = (0..n)
                .filter(|&j| labels[j] != labels[a])
                .map(|j| (j, sq(&emb[a], &emb[j])))
                .collect();
            match strategy {
                Selection::SemiHard => {
                    let c: Vec<usize> = negs
                        .iter()
                        .filter(|(_, d)| *d > dap && *d < dap + alpha)
                        .map(|(j, _)| *j)
                        .collect();
                    if !c.is_empty() {
                        out.push(Triplet {
                            a,
                            p,
                            n: c[rng.below(c.len())],
                        });
                    }
                }
                Selection::MarginViolators => {
                    let c: Vec<usize> = negs
                        .iter()
                        .filter(|(_, d)| d - dap < alpha)
                        .map(|(j, _)| *j)
                        .collect();
                    if !c.is_empty() {
                        out.push(Triplet {
                            a,
                            p,
                            n: c[rng.below(c.len())],
                        });
                    }
                }
                Selection::Hard => {
                    if let Some(&(j, _)) = negs.iter().min_by(|x, y| x.1.total_cmp(&y.1)) {
                        out.push(Triplet { a, p, n: j });
                    }
                }
                Selection::BatchAll => {
                    out.extend(
                        negs.iter()
                            .filter(|(_, d)| dap - d + alpha > 0.0)
                            .map(|&(j, _)| Triplet { a, p, n: j }),
                    );
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1-D "embeddings" (as 1-vectors) so squared distances are easy:
    /// person 0 at 0.0 and 0.3; person 1 at 0.5 and 2.0; person 2 at 0.2.
    fn batch() -> (Vec<Vec<f32>>, Vec<usize>) {
        (
            vec![vec![0.0], vec![0.3], vec![0.5], vec![2.0], vec![0.2]],
            vec![0, 0, 1, 1, 2],
        )
    }

    #[test]
    fn semi_hard_by_hand() {
        // Pair (0,1): d_ap = 0.09. Negatives of 0: idx2 0.25, idx3 4.0, idx4 0.04.
        //   semi-hard with alpha 0.2: 0.09 < d < 0.29 -> idx2 only.
        // Pair (2,3): d_ap = 2.25. Negatives of 2: idx0 0.25, idx1 0.04, idx4 0.09 -> none > 2.25.
        let (e, l) = batch();
        let t = select_triplets(&e, &l, 0.2, Selection::SemiHard, &mut Rng::new(1));
        assert_eq!(t, vec![Triplet { a: 0, p: 1, n: 2 }]);
    }

    #[test]
    fn margin_violators_by_hand() {
        // Pair (0,1): d - 0.09 < 0.2 -> idx2 (0.25) and idx4 (0.04): one of them.
        // Pair (2,3): d - 2.25 < 0.2 -> all three negatives (0.25, 0.04, 0.09): one of them.
        let (e, l) = batch();
        let t = select_triplets(&e, &l, 0.2, Selection::MarginViolators, &mut Rng::new(1));
        assert_eq!(t.len(), 2);
        assert!([2, 4].contains(&t[0].n) && (t[0].a, t[0].p) == (0, 1));
        assert!([0, 1, 4].contains(&t[1].n) && (t[1].a, t[1].p) == (2, 3));
    }

    #[test]
    fn hard_by_hand() {
        let (e, l) = batch();
        let t = select_triplets(&e, &l, 0.2, Selection::Hard, &mut Rng::new(1));
        // Closest negative of 0 is idx4 (0.04); of 2 is idx1 (0.04).
        assert_eq!(
            t,
            vec![Triplet { a: 0, p: 1, n: 4 }, Triplet { a: 2, p: 3, n: 1 }]
        );
    }

    #[test]
    fn batch_all_by_hand() {
        let (e, l) = batch();
        let t = select_triplets(&e, &l, 0.2, Selection::BatchAll, &mut Rng::new(1));
        // (0,1): 0.09 - d + 0.2 > 0 -> d < 0.29: idx2, idx4. (2,3): d < 2.45: idx0, idx1, idx4.
        assert_eq!(
            t.iter().map(|t| (t.a, t.p, t.n)).collect::<Vec<_>>(),
            vec![(0, 1, 2), (0, 1, 4), (2, 3, 0), (2, 3, 1), (2, 3, 4)]
        );
    }
}
