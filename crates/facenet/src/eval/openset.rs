//! Open-set identification: "who is this, or nobody I know" measured on a labelled
//! `person/photo` folder, and the impostor-distance distribution that sets its thresholds.
//!
//! ```text
//! facenet evaluate --open-set --images lfw/ --out report/
//! ```
//!
//! The split ([`OpenSetSplit`]): every person with two or more photos is enrolled from their
//! first `k` photos (the gallery) and their other photos are genuine probes; every person with a
//! single photo is a stranger. A probe is identified correctly (DIR, detection and
//! identification rate) when its nearest identity is its own and closer than the threshold; a
//! stranger is falsely identified (FIR) when any identity is closer than the threshold.

use serde::{Deserialize, Serialize};

use crate::embed::l2_normalize;

/// How a person's several enrolled photos are compared with a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum GalleryRule {
    /// The nearest of the person's photos.
    #[default]
    NearestSample,
    /// The mean of the person's unit embeddings, normalized (one point per person).
    Centroid,
}

/// A deterministic gallery / probe / stranger split of labelled images.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenSetSplit {
    /// `(person, image indices)` enrolled, one entry per person with two or more images.
    pub gallery: Vec<(String, Vec<usize>)>,
    /// `(gallery person index, image index)` of the genuine probes.
    pub probes: Vec<(usize, usize)>,
    /// Image indices of the strangers (people with a single image).
    pub strangers: Vec<usize>,
}

impl OpenSetSplit {
    /// Splits images labelled by `people[i]` (in file order). People with two or more images
    /// enrol their first `per_person` (0 = all but one, keeping at least one probe); the rest
    /// are probes. `seed` 0 keeps file order; another seed shuffles each person's images
    /// first, reproducibly.
    pub fn new(people: &[String], per_person: usize, seed: u64) -> Self {
        let mut order: Vec<String> = Vec::new();
        let mut by_person: std::collections::HashMap<&str, Vec<usize>> = Default::default();
        for (i, p) in people.iter().enumerate() {
            let list = by_person.entry(p).or_default();
            if list.is_empty() {
                order.push(p.clone());
            }
            list.push(i);
        }
        let mut split = Self {
            gallery: Vec::new(),
            probes: Vec::new(),
            strangers: Vec::new(),
        };
        for p in order {
            let mut imgs = by_person.remove(p.as_str()).unwrap_or_default();
            if imgs.len() == 1 {
                split.strangers.push(imgs[0]);
                continue;
            }
            if seed != 0 {
                let mut rng = crate::rng::Rng::new(seed ^ fnv(&p));
                rng.shuffle(&mut imgs);
            }
            let k = match per_person {
                0 => imgs.len() - 1,
                k => k.min(imgs.len() - 1),
            };
            let g = split.gallery.len();
            split.probes.extend(imgs[k..].iter().map(|&i| (g, i)));
            imgs.truncate(k);
            split.gallery.push((p, imgs));
        }
        split
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Each probe's and stranger's nearest identity, the raw material of every open-set figure.
#[derive(Debug, Clone, Serialize)]
pub struct OpenSetScores {
    /// Per genuine probe: distance to the nearest identity, and whether it is its own.
    pub probes: Vec<(f32, bool)>,
    /// Per stranger: distance to the nearest identity.
    pub strangers: Vec<f32>,
    /// Identities in the gallery.
    pub identities: usize,
    /// Faces in the gallery.
    pub faces: usize,
}

/// One row of an open-set table.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct OpenSetPoint {
    /// The threshold (L2 between unit embeddings).
    pub threshold: f32,
    /// Strangers named as someone.
    pub fir: f64,
    /// Genuine probes named correctly (and under the threshold).
    pub dir: f64,
    /// Genuine probes named as someone else.
    pub misidentified: f64,
}

/// Scores a split: `emb[i]` is image `i`'s unit embedding.
pub fn score(split: &OpenSetSplit, emb: &[Vec<f32>], rule: GalleryRule) -> OpenSetScores {
    let dim = emb.first().map_or(0, Vec::len);
    // Gallery points and the identity of each.
    let mut points: Vec<f32> = Vec::new();
    let mut owner: Vec<usize> = Vec::new();
    for (g, (_, imgs)) in split.gallery.iter().enumerate() {
        match rule {
            GalleryRule::NearestSample => {
                for &i in imgs {
                    points.extend_from_slice(&emb[i]);
                    owner.push(g);
                }
            }
            GalleryRule::Centroid => {
                let mut c = vec![0f32; dim];
                for &i in imgs {
                    c.iter_mut().zip(&emb[i]).for_each(|(a, b)| *a += b);
                }
                points.extend(l2_normalize(&c));
                owner.push(g);
            }
        }
    }
    let nearest = |q: &[f32]| -> (f32, usize) {
        let mut best = (f32::MIN, usize::MAX);
        for (row, &o) in points.chunks_exact(dim.max(1)).zip(&owner) {
            let dot: f32 = row.iter().zip(q).map(|(a, b)| a * b).sum();
            if dot > best.0 {
                best = (dot, o);
            }
        }
        ((2.0 - 2.0 * best.0).max(0.0).sqrt(), best.1)
    };
    let probes = split
        .probes
        .iter()
        .map(|&(g, i)| {
            let (d, o) = nearest(&emb[i]);
            (d, o == g)
        })
        .collect();
    let strangers = split
        .strangers
        .iter()
        .map(|&i| nearest(&emb[i]).0)
        .collect();
    OpenSetScores {
        probes,
        strangers,
        identities: split.gallery.len(),
        faces: owner.len(),
    }
}

impl OpenSetScores {
    /// The rates at a threshold.
    pub fn at(&self, t: f32) -> OpenSetPoint {
        let n = self.probes.len().max(1) as f64;
        let fir = self.strangers.iter().filter(|&&d| d < t).count() as f64
            / self.strangers.len().max(1) as f64;
        let dir = self.probes.iter().filter(|p| p.1 && p.0 < t).count() as f64 / n;
        let mis = self.probes.iter().filter(|p| !p.1 && p.0 < t).count() as f64 / n;
        OpenSetPoint {
            threshold: t,
            fir,
            dir,
            misidentified: mis,
        }
    }

    /// The point at the largest threshold whose FIR does not exceed `fir` (the threshold just
    /// at or below the `fir` quantile of the strangers' distances).
    pub fn at_fir(&self, fir: f64) -> OpenSetPoint {
        let mut d = self.strangers.clone();
        d.sort_by(f32::total_cmp);
        // Strangers strictly below t are false identifications: allow floor(fir * n) of them.
        let allowed = (fir * d.len() as f64).floor() as usize;
        let t = d.get(allowed).copied().unwrap_or(2.0);
        self.at(t)
    }

    /// Closed-set rank-1 accuracy (nearest identity, no threshold).
    pub fn rank1(&self) -> f64 {
        self.probes.iter().filter(|p| p.1).count() as f64 / self.probes.len().max(1) as f64
    }

    /// The DET-style curve: a point per threshold step over 0..2.
    pub fn curve(&self, steps: usize) -> Vec<OpenSetPoint> {
        (1..=steps)
            .map(|k| self.at(2.0 * k as f32 / steps as f32))
            .collect()
    }
}

/// What an open-set evaluation measured.
#[derive(Debug, Clone, Serialize)]
pub struct OpenSetReport {
    /// Photos enrolled per person (0 = all but one).
    pub per_person: usize,
    /// How several photos of a person are compared.
    pub rule: GalleryRule,
    /// Identities enrolled.
    pub identities: usize,
    /// Gallery entries a stranger is compared with (faces, or one centroid per person).
    pub comparisons: usize,
    /// Genuine probes.
    pub probes: usize,
    /// Strangers.
    pub strangers: usize,
    /// Nearest identity right, no threshold.
    pub rank1: f64,
    /// At each target FIR: the threshold that meets it on these strangers, and the rates.
    pub at_fir: Vec<(f64, OpenSetPoint)>,
    /// At the threshold derived from an impostor table for each target FIR and this gallery's
    /// size (what `identify` applies by default).
    pub derived: Vec<(f64, OpenSetPoint)>,
    /// A point per 0.01 of threshold, for plots.
    pub curve: Vec<OpenSetPoint>,
}

impl std::fmt::Display for OpenSetReport {
    /// The table as `facenet evaluate --open-set` prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} identities ({} gallery entries, {:?}, {} photo(s) each), {} genuine probes, {} strangers; rank-1 {:.4}",
            self.identities,
            self.comparisons,
            self.rule,
            self.per_person,
            self.probes,
            self.strangers,
            self.rank1
        )?;
        writeln!(
            f,
            "target FIR | threshold | FIR measured | DIR | misidentified"
        )?;
        for (name, rows) in [
            ("on these strangers", &self.at_fir),
            ("derived", &self.derived),
        ] {
            for (fir, p) in rows {
                writeln!(
                    f,
                    "{fir:>10} | {:.3} | {:.4} | {:.4} | {:.4}  ({name})",
                    p.threshold, p.fir, p.dir, p.misidentified
                )?;
            }
        }
        Ok(())
    }
}

/// Splits, scores and tabulates: the open-set protocol on labelled embeddings. With an
/// impostor table, also the rates at the thresholds it derives for each of `firs`.
pub fn evaluate(
    people: &[String],
    emb: &[Vec<f32>],
    (per_person, seed, rule): (usize, u64, GalleryRule),
    firs: &[f64],
    table: Option<&ImpostorTable>,
) -> OpenSetReport {
    let split = OpenSetSplit::new(people, per_person, seed);
    let s = score(&split, emb, rule);
    let derived = match table {
        Some(t) => firs
            .iter()
            .map(|&f| (f, s.at(t.threshold_for_fir(f, s.faces))))
            .collect(),
        None => Vec::new(),
    };
    OpenSetReport {
        per_person,
        rule,
        identities: s.identities,
        comparisons: s.faces,
        probes: s.probes.len(),
        strangers: s.strangers.len(),
        rank1: s.rank1(),
        at_fir: firs.iter().map(|&f| (f, s.at_fir(f))).collect(),
        derived,
        curve: s.curve(200),
    }
}

/// The impostor table shipped for the Keras FaceNet weights (`facenet fetch`), made by
/// `facenet evaluate --open-set --images lfw/ --impostor-table` over LFW; `None` for other
/// weights.
pub fn bundled_table(fingerprint: &str) -> Option<ImpostorTable> {
    static KERAS: std::sync::OnceLock<Option<ImpostorTable>> = std::sync::OnceLock::new();
    KERAS
        .get_or_init(|| {
            serde_json::from_str(include_str!("../../data/impostor-keras-128.json")).ok()
        })
        .as_ref()
        .filter(|t| t.fingerprint == fingerprint)
        .cloned()
}

/// Distances of impostor pairs (two images of different people) counted by threshold: the
/// per-pair false accept rate of a model as a function of the threshold. Computed once from a
/// labelled face set (for the bundled weights: every cross-person pair of LFW's 13,233 photos,
/// 87.4 M pairs), it is what turns a target false-identification rate into a threshold for a
/// gallery of any size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImpostorTable {
    /// The weights fingerprint the table belongs to.
    pub fingerprint: String,
    /// Where the pairs came from.
    pub source: String,
    /// Impostor pairs counted.
    pub pairs: u64,
    /// Grid of thresholds (L2 between unit embeddings), ascending.
    pub thresholds: Vec<f32>,
    /// Impostor pairs with a distance below each threshold.
    pub below: Vec<u64>,
}

impl ImpostorTable {
    /// Counts every cross-person pair of `emb` (labels `people`) on a grid of `step` over
    /// `[lo, hi]`, on all cores.
    pub fn from_labelled(
        emb: &[Vec<f32>],
        people: &[String],
        fingerprint: &str,
        source: &str,
        (lo, hi, step): (f32, f32, f32),
    ) -> Self {
        use rayon::prelude::*;
        let n_grid = ((hi - lo) / step).round() as usize + 1;
        let thresholds: Vec<f32> = (0..n_grid).map(|k| lo + step * k as f32).collect();
        // Dot-product bins: distance d <-> dot 1 - d^2 / 2; a histogram over the grid cells.
        let (hist, pairs) = (0..emb.len())
            .into_par_iter()
            .map(|i| {
                let mut h = vec![0u64; n_grid + 1];
                let mut pairs = 0u64;
                for j in i + 1..emb.len() {
                    if people[i] == people[j] {
                        continue;
                    }
                    let dot: f32 = emb[i].iter().zip(&emb[j]).map(|(a, b)| a * b).sum();
                    let d = (2.0 - 2.0 * dot).max(0.0).sqrt();
                    // Cell c holds distances in [t[c-1], t[c]): counted below t[c] onwards.
                    let c = if d < lo {
                        0
                    } else {
                        (((d - lo) / step).floor() as usize + 1).min(n_grid)
                    };
                    h[c] += 1;
                    pairs += 1;
                }
                (h, pairs)
            })
            .reduce(
                || (vec![0u64; n_grid + 1], 0),
                |(mut a, pa), (b, pb)| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    (a, pa + pb)
                },
            );
        let mut below = Vec::with_capacity(n_grid);
        let mut acc = 0u64;
        for h in &hist[..n_grid] {
            acc += h;
            below.push(acc);
        }
        Self {
            fingerprint: fingerprint.into(),
            source: source.into(),
            pairs,
            thresholds,
            below,
        }
    }

    /// The per-pair false accept rate at `t`: the share of impostor pairs closer than `t`
    /// (linear between grid points; 0 below the grid, the last value above it).
    pub fn far(&self, t: f32) -> f64 {
        let n = self.pairs.max(1) as f64;
        let th = &self.thresholds;
        let Some(&first) = th.first() else {
            return 0.0;
        };
        if t <= first {
            // At most the count below the grid's first threshold.
            return self.below[0] as f64 / n;
        }
        match th.iter().position(|&x| x >= t) {
            None => *self.below.last().unwrap_or(&0) as f64 / n,
            Some(k) => {
                let (t0, t1) = (th[k - 1], th[k]);
                let (b0, b1) = (self.below[k - 1] as f64, self.below[k] as f64);
                (b0 + (b1 - b0) * ((t - t0) / (t1 - t0)) as f64) / n
            }
        }
    }

    /// The largest threshold whose per-pair false accept rate is at most `far`.
    pub fn threshold_for_far(&self, far: f64) -> f32 {
        let n = self.pairs.max(1) as f64;
        let want = far * n;
        let th = &self.thresholds;
        match self.below.iter().position(|&b| b as f64 > want) {
            None => *th.last().unwrap_or(&2.0),
            Some(0) => th[0],
            Some(k) => {
                let (b0, b1) = (self.below[k - 1] as f64, self.below[k] as f64);
                let f = if b1 > b0 {
                    (want - b0) / (b1 - b0)
                } else {
                    0.0
                };
                th[k - 1] + (th[k] - th[k - 1]) * f as f32
            }
        }
    }

    /// The threshold that keeps the false-identification rate at `fir` when a stranger is
    /// compared with `comparisons` gallery entries: the one for the per-comparison rate
    /// [`per_comparison_far`].
    pub fn threshold_for_fir(&self, fir: f64, comparisons: usize) -> f32 {
        self.threshold_for_far(per_comparison_far(fir, comparisons))
    }
}

/// The per-comparison false accept rate that keeps the chance of a stranger falling under the
/// threshold of any of `comparisons` gallery entries at `fir`: `1 - (1 - fir)^(1/N)`.
pub fn per_comparison_far(fir: f64, comparisons: usize) -> f64 {
    let n = comparisons.max(1) as f64;
    1.0 - (1.0 - fir.clamp(0.0, 1.0)).powf(1.0 / n)
}

/// The chance that a stranger falls under the threshold of one of `comparisons` entries when
/// each accepts impostors at the per-pair rate `far`: `1 - (1 - far)^N`.
pub fn expected_fir(far: f64, comparisons: usize) -> f64 {
    1.0 - (1.0 - far.clamp(0.0, 1.0)).powf(comparisons.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn split_by_hand() {
        // a: 3 photos, b: 1 (stranger), c: 2.
        let people = names(&["a", "a", "a", "b", "c", "c"]);
        let s = OpenSetSplit::new(&people, 1, 0);
        assert_eq!(
            s.gallery,
            vec![("a".to_string(), vec![0]), ("c".to_string(), vec![4])]
        );
        assert_eq!(s.probes, vec![(0, 1), (0, 2), (1, 5)]);
        assert_eq!(s.strangers, vec![3]);
        // All but one enrolled; never fewer than one probe per person.
        let s = OpenSetSplit::new(&people, 0, 0);
        assert_eq!(s.gallery[0].1, vec![0, 1]);
        assert_eq!(s.probes, vec![(0, 2), (1, 5)]);
        let s3 = OpenSetSplit::new(&people, 5, 0);
        assert_eq!(s3.gallery[0].1.len(), 2);
        // A seed shuffles reproducibly, and keeps who is a stranger.
        let a = OpenSetSplit::new(&people, 1, 7);
        assert_eq!(a, OpenSetSplit::new(&people, 1, 7));
        assert_eq!(a.strangers, vec![3]);
        assert_eq!(a.probes.len(), 3);
    }

    #[test]
    fn rates_by_hand() {
        let s = OpenSetScores {
            probes: vec![(0.5, true), (0.9, true), (0.7, false), (1.3, true)],
            strangers: vec![0.8, 1.0, 1.2, 1.4],
            identities: 2,
            faces: 2,
        };
        let p = s.at(1.0);
        assert_eq!((p.fir, p.dir, p.misidentified), (0.25, 0.5, 0.25));
        // FIR at most 0.25 allows one stranger below: the threshold is the second distance.
        assert_eq!(s.at_fir(0.25).threshold, 1.0);
        assert_eq!(s.at_fir(0.0).threshold, 0.8);
        assert_eq!(s.rank1(), 0.75);
    }

    #[test]
    fn scoring_nearest_sample_and_centroid() {
        let e = |deg: f32| {
            let a = deg.to_radians();
            vec![a.cos(), a.sin()]
        };
        // Person a enrolled at 0 and 40 degrees, person b at 180; probe of a at 35; stranger at 90.
        let emb = vec![e(0.0), e(40.0), e(35.0), e(180.0), e(170.0), e(90.0)];
        let people = names(&["a", "a", "a", "b", "b", "z"]);
        let split = OpenSetSplit::new(&people, 2, 0);
        let near = score(&split, &emb, GalleryRule::NearestSample);
        assert_eq!(near.faces, 3);
        assert!(near.probes[0].1);
        // Chord of 5 degrees.
        assert!((near.probes[0].0 - 2.0 * 2.5f32.to_radians().sin()).abs() < 1e-5);
        let cent = score(&split, &emb, GalleryRule::Centroid);
        assert_eq!(cent.faces, 2);
        // The centroid of 0 and 40 degrees sits at 20: 15 degrees from the probe.
        assert!((cent.probes[0].0 - 2.0 * 7.5f32.to_radians().sin()).abs() < 1e-5);
    }

    #[test]
    fn impostor_table_and_threshold_derivation_by_hand() {
        // Four unit vectors at 0, 90, 180 and 270 degrees, four people: distances sqrt(2)
        // (4 pairs) and 2 (2 pairs).
        let emb = vec![
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![-1.0, 0.0],
            vec![0.0, -1.0],
        ];
        let people = names(&["a", "b", "c", "d"]);
        let t = ImpostorTable::from_labelled(&emb, &people, "fp", "test", (0.0, 2.0, 0.5));
        assert_eq!(t.pairs, 6);
        assert_eq!(t.thresholds, vec![0.0, 0.5, 1.0, 1.5, 2.0]);
        assert_eq!(t.below, vec![0, 0, 0, 4, 4]);
        assert_eq!(t.far(1.0), 0.0);
        assert!((t.far(1.5) - 4.0 / 6.0).abs() < 1e-12);
        assert!((t.far(1.25) - 2.0 / 6.0).abs() < 1e-12);
        assert_eq!(t.threshold_for_far(0.0), 1.0);
        assert!((t.threshold_for_far(2.0 / 6.0) - 1.25).abs() < 1e-6);

        // 1 - (1 - f)^(1/N) by hand: f = 0.19, N = 2 -> 1 - 0.9 = 0.1.
        assert!((per_comparison_far(0.19, 2) - 0.1).abs() < 1e-12);
        assert!((expected_fir(0.1, 2) - 0.19).abs() < 1e-12);
        // The threshold falls as the gallery grows.
        assert!((per_comparison_far(0.01, 1) - 0.01).abs() < 1e-15);
        assert!(per_comparison_far(0.01, 1000) < 1.01e-5);
        assert!(per_comparison_far(0.01, 1000) > 1.0e-5);
    }
}
