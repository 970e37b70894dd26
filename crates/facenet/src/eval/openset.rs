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
use crate::eval::cohort::{
    COHORT_DRAWS, COHORT_K, COHORT_MIN_IDENTITIES, COHORT_SIZES, COHORT_TARGETS, CohortThresholds,
    cohort_means, cohort_score, draw_scores, quantile_below,
};

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
        let mut split = Self {
            gallery: Vec::new(),
            probes: Vec::new(),
            strangers: Vec::new(),
        };
        for (p, mut imgs) in persons(people, seed) {
            if imgs.len() == 1 {
                split.strangers.push(imgs[0]);
                continue;
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

    /// Two splits that differ only in what is enrolled, for measuring an enrolment gate:
    /// without it, each person enrols their first `per_person` images (at least 1); with it,
    /// their first `per_person` images that are `usable`. The probes are the same in both:
    /// the person's images enrolled in neither. People with no usable image, or no image left
    /// to probe with, are left out of both; their number is returned. Strangers (people with
    /// one image) are the same in both.
    pub fn gated(
        people: &[String],
        per_person: usize,
        seed: u64,
        usable: &[bool],
    ) -> (Self, Self, usize) {
        let k = per_person.max(1);
        let empty = Self {
            gallery: Vec::new(),
            probes: Vec::new(),
            strangers: Vec::new(),
        };
        let (mut plain, mut gated) = (empty.clone(), empty);
        let mut left_out = 0;
        for (name, imgs) in persons(people, seed) {
            if imgs.len() == 1 {
                plain.strangers.push(imgs[0]);
                gated.strangers.push(imgs[0]);
                continue;
            }
            let first: Vec<usize> = imgs.iter().copied().take(k).collect();
            let good: Vec<usize> = imgs
                .iter()
                .copied()
                .filter(|&i| usable.get(i).copied().unwrap_or(false))
                .take(k)
                .collect();
            let probes: Vec<usize> = imgs
                .iter()
                .copied()
                .filter(|i| !first.contains(i) && !good.contains(i))
                .collect();
            if good.is_empty() || probes.is_empty() {
                left_out += 1;
                continue;
            }
            for (split, enrolled) in [(&mut plain, first), (&mut gated, good)] {
                let g = split.gallery.len();
                split.probes.extend(probes.iter().map(|&i| (g, i)));
                split.gallery.push((name.clone(), enrolled));
            }
        }
        (plain, gated, left_out)
    }
}

/// Each person's image indices, people in order of first appearance; `seed` 0 keeps file
/// order, another shuffles each person's images, reproducibly.
fn persons(people: &[String], seed: u64) -> Vec<(String, Vec<usize>)> {
    let mut order: Vec<String> = Vec::new();
    let mut by_person: std::collections::HashMap<&str, Vec<usize>> = Default::default();
    for (i, p) in people.iter().enumerate() {
        let list = by_person.entry(p).or_default();
        if list.is_empty() {
            order.push(p.clone());
        }
        list.push(i);
    }
    order
        .into_iter()
        .map(|p| {
            let mut imgs = by_person.remove(p.as_str()).unwrap_or_default();
            if seed != 0 && imgs.len() > 1 {
                let mut rng = crate::rng::Rng::new(seed ^ fnv(&p));
                rng.shuffle(&mut imgs);
            }
            (p, imgs)
        })
        .collect()
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

/// The gallery's points (one per face, or one centroid per person) and each one's person.
fn gallery_points(
    split: &OpenSetSplit,
    emb: &[Vec<f32>],
    rule: GalleryRule,
) -> (Vec<f32>, Vec<usize>) {
    let dim = emb.first().map_or(0, Vec::len);
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
    (points, owner)
}

/// Scores a split: `emb[i]` is image `i`'s unit embedding.
pub fn score(split: &OpenSetSplit, emb: &[Vec<f32>], rule: GalleryRule) -> OpenSetScores {
    let dim = emb.first().map_or(0, Vec::len).max(1);
    let (points, owner) = gallery_points(split, emb, rule);
    let nearest = |q: &[f32]| -> (f32, usize) {
        let mut best = (f32::MIN, usize::MAX);
        for (row, &o) in points.chunks_exact(dim).zip(&owner) {
            let dot: f32 = row.iter().zip(q).map(|(a, b)| a * b).sum();
            if dot > best.0 {
                best = (dot, o);
            }
        }
        ((2.0 - 2.0 * best.0).max(0.0).sqrt(), best.1)
    };
    score_with(split, emb, owner.len(), &nearest)
}

/// [`score`] with the nearest distance replaced by its z-score among the probe's distances
/// to every gallery entry (test normalization with the gallery as the cohort): how far below
/// the probe's typical distance its nearest entry lies. A face close to everyone is
/// discounted.
pub fn score_normalized(
    split: &OpenSetSplit,
    emb: &[Vec<f32>],
    rule: GalleryRule,
) -> OpenSetScores {
    let dim = emb.first().map_or(0, Vec::len).max(1);
    let (points, owner) = gallery_points(split, emb, rule);
    let nearest = |q: &[f32]| -> (f32, usize) {
        let mut best = (f32::MAX, usize::MAX);
        let (mut sum, mut sq) = (0f64, 0f64);
        for (row, &o) in points.chunks_exact(dim).zip(&owner) {
            let dot: f32 = row.iter().zip(q).map(|(a, b)| a * b).sum();
            let d = (2.0 - 2.0 * dot).max(0.0).sqrt();
            sum += d as f64;
            sq += d as f64 * d as f64;
            if d < best.0 {
                best = (d, o);
            }
        }
        let n = owner.len().max(1) as f64;
        let mean = sum / n;
        let sd = (sq / n - mean * mean).max(1e-12).sqrt();
        (((best.0 as f64 - mean) / sd) as f32, best.1)
    };
    score_with(split, emb, owner.len(), &nearest)
}

/// [`score`] with the cohort score ([`crate::eval::cohort`]): each entry's distance less its
/// mean distance to its [`COHORT_K`] nearest entries of other people. Galleries of fewer than
/// [`COHORT_MIN_IDENTITIES`] identities keep the plain distance.
pub fn score_cohort(split: &OpenSetSplit, emb: &[Vec<f32>], rule: GalleryRule) -> OpenSetScores {
    let dim = emb.first().map_or(0, Vec::len).max(1);
    let (points, owner) = gallery_points(split, emb, rule);
    let means = match split.gallery.len() >= COHORT_MIN_IDENTITIES {
        true => cohort_means(&points, &owner, dim, COHORT_K),
        false => vec![0.0; owner.len()],
    };
    let nearest = |q: &[f32]| -> (f32, usize) {
        let mut best = (f32::MAX, usize::MAX);
        for ((row, &o), &m) in points.chunks_exact(dim).zip(&owner).zip(&means) {
            let dot: f32 = row.iter().zip(q).map(|(a, b)| a * b).sum();
            let s = cohort_score((2.0 - 2.0 * dot).max(0.0).sqrt(), m);
            if s < best.0 {
                best = (s, o);
            }
        }
        best
    };
    score_with(split, emb, owner.len(), &nearest)
}

fn score_with(
    split: &OpenSetSplit,
    emb: &[Vec<f32>],
    faces: usize,
    nearest: &dyn Fn(&[f32]) -> (f32, usize),
) -> OpenSetScores {
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
        faces,
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
        // Strangers strictly below t are false identifications: allow floor(fir * n) of them.
        let t = match self.strangers.is_empty() {
            true => 2.0,
            false => quantile_below(&self.strangers, fir),
        };
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
    /// At each target FIR, thresholds set on these strangers for the z-score of the nearest
    /// distance among the probe's distances to the whole gallery ([`score_normalized`]).
    pub normalized: Vec<(f64, OpenSetPoint)>,
    /// At each target FIR, the cohort score ([`score_cohort`]) at thresholds set on these
    /// strangers.
    pub cohort_at_fir: Vec<(f64, OpenSetPoint)>,
    /// At each target FIR, the cohort score at the threshold the cohort table derives for
    /// this gallery's identities (what `identify --score cohort` applies).
    pub cohort: Vec<(f64, OpenSetPoint)>,
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
            (
                "z-score over the gallery, on these strangers",
                &self.normalized,
            ),
            ("cohort score, on these strangers", &self.cohort_at_fir),
            ("cohort score, derived", &self.cohort),
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
    (table, cohort): (Option<&ImpostorTable>, Option<&CohortThresholds>),
) -> OpenSetReport {
    let split = OpenSetSplit::new(people, per_person, seed);
    let s = score(&split, emb, rule);
    let c = score_cohort(&split, emb, rule);
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
        normalized: {
            let z = score_normalized(&split, emb, rule);
            firs.iter().map(|&f| (f, z.at_fir(f))).collect()
        },
        cohort_at_fir: firs.iter().map(|&f| (f, c.at_fir(f))).collect(),
        cohort: match cohort {
            Some(t) => firs
                .iter()
                .filter_map(|&f| Some((f, c.at(t.threshold_for_fir(f, c.identities)?))))
                .collect(),
            None => Vec::new(),
        },
        curve: s.curve(200),
    }
}

/// One cell of a calibration table: for a gallery size and a target, the threshold the
/// impostor table derives and the share of strangers it names.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CalibrationPoint {
    /// Identities in the gallery (one photo each).
    pub identities: usize,
    /// The target false-identification rate.
    pub target: f64,
    /// The derived threshold.
    pub threshold: f32,
    /// Strangers named as someone at it (over all draws).
    pub achieved: f64,
    /// Stranger searches counted (over all draws).
    pub searches: usize,
    /// Where the cell pools several tables each measured on their own people
    /// ([`pooled`]): the least and the most achieved over target among them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<(f64, f64)>,
}

impl CalibrationPoint {
    /// Achieved over target.
    pub fn ratio(&self) -> f64 {
        self.achieved / self.target
    }
}

/// Whether derived thresholds keep their promise on a labelled set.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationReport {
    /// Where the table came from and what it was tried on.
    pub what: String,
    /// A cell per gallery size and target.
    pub points: Vec<CalibrationPoint>,
}

impl std::fmt::Display for CalibrationReport {
    /// Achieved FIR beside each target, a row per gallery size.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "calibration: {}", self.what)?;
        let ranged = self.points.iter().any(|p| p.range.is_some());
        writeln!(
            f,
            "identities | target FIR | threshold | achieved FIR | achieved / target{} | searches",
            if ranged { " (range)" } else { "" }
        )?;
        for p in &self.points {
            let range = p
                .range
                .map(|(lo, hi)| format!(" ({lo:.2}-{hi:.2})"))
                .unwrap_or_default();
            writeln!(
                f,
                "{:>10} | {:>10} | {:.3} | {:.5} | {:.2}{range} | {}",
                p.identities,
                p.target,
                p.threshold,
                p.achieved,
                p.ratio(),
                p.searches
            )?;
        }
        Ok(())
    }
}

/// Measures derived thresholds against their targets. For each gallery size of `sizes` (those
/// leaving a quarter of the people as strangers), `draws` galleries are drawn (reproducibly
/// from `seed`) from the people of `people`, one photo each (the person's first in file
/// order); one photo (drawn at random) of each person not drawn is a stranger. The achieved FIR is the share of strangers whose nearest entry is closer than
/// the threshold `table` derives for the target and the gallery's size.
pub fn calibration(
    people: &[String],
    emb: &[Vec<f32>],
    table: &ImpostorTable,
    sizes: &[usize],
    targets: &[f64],
    draws: (usize, u64),
) -> Vec<CalibrationPoint> {
    calibrate_with(people, emb, sizes, targets, draws, None, &|t, n| {
        table.threshold_for_fir(t, n)
    })
}

/// [`calibration`] for the cohort score ([`crate::eval::cohort`]): the thresholds `table`
/// derives, tried on galleries drawn from `people` in the same way.
pub fn cohort_calibration(
    people: &[String],
    emb: &[Vec<f32>],
    table: &CohortThresholds,
    sizes: &[usize],
    targets: &[f64],
    draws: (usize, u64),
) -> Vec<CalibrationPoint> {
    calibrate_with(
        people,
        emb,
        sizes,
        targets,
        draws,
        Some(table.k),
        &|t, n| table.threshold_for_fir(t, n).unwrap_or(f32::MIN),
    )
}

fn calibrate_with(
    people: &[String],
    emb: &[Vec<f32>],
    sizes: &[usize],
    targets: &[f64],
    (draws, seed): (usize, u64),
    cohort: Option<usize>,
    threshold: &dyn Fn(f64, usize) -> f32,
) -> Vec<CalibrationPoint> {
    let distinct = people
        .iter()
        .collect::<std::collections::HashSet<_>>()
        .len();
    let mut out = Vec::new();
    let mut rng = crate::rng::Rng::new(seed.max(1));
    for &n in sizes.iter().filter(|&&n| n >= 1 && n * 4 <= distinct * 3) {
        let scores = draw_scores(people, emb, (n, 1, draws), &mut rng, cohort).strangers;
        for &target in targets {
            let threshold = threshold(target, n);
            let hits = scores.iter().filter(|&&d| d < threshold).count();
            out.push(CalibrationPoint {
                identities: n,
                target,
                threshold,
                achieved: hits as f64 / scores.len().max(1) as f64,
                searches: scores.len(),
                range: None,
            });
        }
    }
    out
}

/// The grid `(lo, hi, step)` of the shipped impostor table and of the tables the calibration
/// makes.
pub const TABLE_GRID: (f32, f32, f32) = (0.3, 1.6, 0.005);

/// Gallery sizes [`calibration_reports`] measures (those that leave a quarter of the people
/// as strangers).
pub const CALIBRATION_SIZES: [usize; 6] = [10, 30, 100, 300, 1000, 3000];

/// Random splits of the people into halves that [`calibration_reports`] measures tables
/// out of sample on, each way: the achieved rates are pooled over them, and their spread says
/// how much a set of people this size moves them. Ten for fewer than 1,000 people (a half's
/// rates rest on few look-alike pairs there, and the tables are quick to make), else three.
pub fn calibration_splits(people: usize) -> u64 {
    if people < 1000 { 10 } else { 3 }
}

/// Whether derived thresholds hit their targets `firs` on a labelled set: tables made from
/// half of the people ([`halves_of`], [`calibration_splits`] random splits, each half in turn),
/// tried on galleries and strangers from the other half; and `table` (the one in use, where
/// there is one), on all of them. The same for the cohort score.
pub fn calibration_reports(
    people: &[String],
    emb: &[Vec<f32>],
    fingerprint: &str,
    (table, cohort): (Option<&ImpostorTable>, Option<&CohortThresholds>),
    firs: &[f64],
) -> Vec<CalibrationReport> {
    let pick = |idx: &[usize]| -> (Vec<String>, Vec<Vec<f32>>) {
        idx.iter()
            .map(|&i| (people[i].clone(), emb[i].clone()))
            .unzip()
    };
    let distinct = people
        .iter()
        .collect::<std::collections::HashSet<_>>()
        .len();
    let splits = calibration_splits(distinct);
    let halves: Vec<_> = (0..splits)
        .map(|split| {
            let (a, b) = halves_of(people, split);
            (pick(&a), pick(&b))
        })
        .collect();
    // Per split and way: (the table's people, the people it is tried on).
    let each_way = || halves.iter().flat_map(|(a, b)| [(a, b), (b, a)]);
    let what = |score: &str| {
        format!(
            "{score}a table from half of the people, galleries and strangers from the other half \
             ({splits} random splits of the {distinct} people, each way: achieved pooled, its \
             range over the {} tables)",
            2 * halves.len()
        )
    };
    let mut out = vec![CalibrationReport {
        what: what(""),
        points: pooled(each_way().map(|((pa, ea), (pb, eb))| {
            let half = ImpostorTable::from_labelled(ea, pa, fingerprint, "half", TABLE_GRID);
            calibration(pb, eb, &half, &CALIBRATION_SIZES, firs, (20, 1))
        })),
    }];
    if let Some(t) = table {
        out.push(CalibrationReport {
            what: format!("the table in use ({}), on all of these people", t.source),
            points: calibration(people, emb, t, &CALIBRATION_SIZES, firs, (20, 2)),
        });
    }
    out.push(CalibrationReport {
        what: what("cohort score: "),
        points: pooled(each_way().map(|((pa, ea), (pb, eb))| {
            let half = CohortThresholds::from_labelled(
                pa,
                ea,
                (fingerprint, "half"),
                &COHORT_SIZES,
                &COHORT_TARGETS,
                (COHORT_DRAWS, 3),
            );
            cohort_calibration(pb, eb, &half, &CALIBRATION_SIZES, firs, (20, 1))
        })),
    });
    if let Some(t) = cohort {
        out.push(CalibrationReport {
            what: format!(
                "cohort score: the table in use ({}), on all of these people",
                t.source
            ),
            points: cohort_calibration(people, emb, t, &CALIBRATION_SIZES, firs, (20, 2)),
        });
    }
    out
}

/// Calibration cells measured several times (each with its own table) pooled per gallery size
/// and target: strangers named over searches in all, the mean threshold, and the range of
/// achieved over target. A cell counts where every measurement has it.
pub fn pooled(runs: impl Iterator<Item = Vec<CalibrationPoint>>) -> Vec<CalibrationPoint> {
    let runs: Vec<Vec<CalibrationPoint>> = runs.collect();
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .iter()
        .filter_map(|p| {
            let cells: Vec<&CalibrationPoint> = runs
                .iter()
                .map(|r| {
                    r.iter()
                        .find(|q| q.identities == p.identities && q.target == p.target)
                })
                .collect::<Option<_>>()?;
            let searches: usize = cells.iter().map(|c| c.searches).sum();
            let named: f64 = cells.iter().map(|c| c.achieved * c.searches as f64).sum();
            let ratios = cells.iter().map(|c| c.ratio());
            Some(CalibrationPoint {
                threshold: cells.iter().map(|c| c.threshold).sum::<f32>() / cells.len() as f32,
                achieved: named / searches.max(1) as f64,
                searches,
                range: Some((
                    ratios.clone().fold(f64::INFINITY, f64::min),
                    ratios.fold(f64::NEG_INFINITY, f64::max),
                )),
                ..*p
            })
        })
        .collect()
}

/// What an enrolment quality gate does to identification ([`gate_effect`]).
#[derive(Debug, Clone, Serialize)]
pub struct GateReport {
    /// The quality asked for.
    pub minimum: f32,
    /// Photos below it, and photos in all.
    pub below: (usize, usize),
    /// People who enrol other photos with the gate.
    pub changed: usize,
    /// People in both galleries.
    pub people: usize,
    /// People left out of both (no photo passes, or none left to probe with).
    pub left_out: usize,
    /// Probes, the same for both.
    pub probes: usize,
    /// Rank-1 without and with the gate.
    pub rank1: (f64, f64),
    /// Per target FIR, DIR without and with the gate (thresholds set on the strangers);
    /// empty without strangers.
    pub dir: Vec<(f64, f64, f64)>,
}

impl std::fmt::Display for GateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "enrolment gate at quality {}: {} of {} photos below it; {} of {} people enrol other \
             photos with it, {} left out (no photo passes, or none left to probe); the same {} \
             probes",
            self.minimum,
            self.below.0,
            self.below.1,
            self.changed,
            self.people,
            self.left_out,
            self.probes
        )?;
        if self.dir.is_empty() {
            writeln!(
                f,
                "  rank-1 (no strangers to set a threshold on): without the gate {:.4}, with it {:.4}",
                self.rank1.0, self.rank1.1
            )?;
        }
        for (fir, a, b) in &self.dir {
            writeln!(
                f,
                "  DIR at FIR {fir} (on these strangers): without the gate {a:.4}, with it {b:.4}"
            )?;
        }
        Ok(())
    }
}

/// Measures an enrolment gate at quality `minimum` ([`OpenSetSplit::gated`]): each image's
/// face quality is `qualities[i]`; the two galleries are scored on the same probes.
pub fn gate_effect(
    people: &[String],
    emb: &[Vec<f32>],
    qualities: &[f32],
    minimum: f32,
    (per_person, seed, rule): (usize, u64, GalleryRule),
    firs: &[f64],
) -> GateReport {
    let usable: Vec<bool> = qualities.iter().map(|&q| q >= minimum).collect();
    let (plain, gated, left_out) = OpenSetSplit::gated(people, per_person, seed, &usable);
    let changed = plain
        .gallery
        .iter()
        .zip(&gated.gallery)
        .filter(|(a, b)| a.1 != b.1)
        .count();
    let (a, b) = (score(&plain, emb, rule), score(&gated, emb, rule));
    let dir = match a.strangers.is_empty() {
        true => Vec::new(),
        false => firs
            .iter()
            .map(|&f| (f, a.at_fir(f).dir, b.at_fir(f).dir))
            .collect(),
    };
    GateReport {
        minimum,
        below: (usable.iter().filter(|u| !**u).count(), usable.len()),
        changed,
        people: plain.gallery.len(),
        left_out,
        probes: plain.probes.len(),
        rank1: (a.rank1(), b.rank1()),
        dir,
    }
}

/// The people of a labelled set split in two by a hash of their names: `(first, second)`
/// image indices. A table made from one half and tried on the other is measured out of
/// sample.
pub fn halves(people: &[String]) -> (Vec<usize>, Vec<usize>) {
    halves_of(people, 0)
}

/// Split number `split` of the people in two ([`halves`] is split 0): by a hash of the
/// person's name and the split, so that each split is another random one, reproducibly.
pub fn halves_of(people: &[String], split: u64) -> (Vec<usize>, Vec<usize>) {
    let mix = split.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..people.len()).partition(|&i| match split {
        0 => fnv(&people[i]).is_multiple_of(2),
        _ => ((fnv(&people[i]) ^ mix).wrapping_mul(0xff51_afd7_ed55_8ccd) >> 40).is_multiple_of(2),
    })
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
    /// How the impostor rate is spread over probes ([`ProbeSpread`]): what makes the
    /// false-identification rate of a gallery of N exact rather than the independence
    /// formula's bound. Tables made before it have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<ProbeSpread>,
    /// How often a person's own photo falls under each threshold ([`GenuineRates`]): the
    /// expected share of enrolled people's photos a gallery names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genuine: Option<GenuineRates>,
}

/// The genuine side of the table: per threshold, the share of a person's photos closer than
/// it to one other photo of theirs (`one`), or to the normalized mean of three others
/// (`three`), averaged over people (each person weighs one). Identification names a probe
/// when its own entry is under the threshold and nearest; at the thresholds of FIR 1 % the
/// nearest is almost always its own (on LFW, 0.15 % of probes are named as someone else), so
/// these are the expected DIR of a gallery with one or three photos per person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenuineRates {
    /// People counted for `one` (two or more photos).
    pub people_one: u64,
    /// People counted for `three` (four or more photos).
    pub people_three: u64,
    /// Per threshold of the table, one photo enrolled.
    pub one: Vec<f64>,
    /// Per threshold of the table, three photos enrolled (their centroid).
    pub three: Vec<f64>,
}

impl GenuineRates {
    /// Measures them on labelled unit embeddings, on the grid `thresholds`.
    pub fn from_labelled(emb: &[Vec<f32>], people: &[String], thresholds: &[f32]) -> Self {
        let mut by_person: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
        for (i, p) in people.iter().enumerate() {
            by_person.entry(p.as_str()).or_default().push(i);
        }
        let dist = |a: &[f32], b: &[f32]| {
            let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            (2.0 - 2.0 * dot).max(0.0).sqrt()
        };
        // The share of `ds` below each threshold.
        let shares = |ds: &[f32]| -> Vec<f64> {
            thresholds
                .iter()
                .map(|&t| ds.iter().filter(|&&d| d < t).count() as f64 / ds.len().max(1) as f64)
                .collect()
        };
        let mut one = vec![0f64; thresholds.len()];
        let mut three = vec![0f64; thresholds.len()];
        let (mut n1, mut n3) = (0u64, 0u64);
        for imgs in by_person.values() {
            if imgs.len() >= 2 {
                let ds: Vec<f32> = imgs
                    .iter()
                    .flat_map(|&i| {
                        imgs.iter()
                            .filter(move |&&j| j != i)
                            .map(move |&j| dist(&emb[i], &emb[j]))
                    })
                    .collect();
                one.iter_mut().zip(shares(&ds)).for_each(|(a, b)| *a += b);
                n1 += 1;
            }
            if imgs.len() >= 4 {
                let ds: Vec<f32> = imgs
                    .iter()
                    .map(|&i| {
                        let mut c = vec![0f32; emb[i].len()];
                        for &j in imgs.iter().filter(|&&j| j != i).take(3) {
                            c.iter_mut().zip(&emb[j]).for_each(|(a, b)| *a += b);
                        }
                        dist(&emb[i], &l2_normalize(&c))
                    })
                    .collect();
                three.iter_mut().zip(shares(&ds)).for_each(|(a, b)| *a += b);
                n3 += 1;
            }
        }
        one.iter_mut().for_each(|v| *v /= n1.max(1) as f64);
        three.iter_mut().for_each(|v| *v /= n3.max(1) as f64);
        Self {
            people_one: n1,
            people_three: n3,
            one,
            three,
        }
    }
}

/// Per-probe impostor rates: at every `stride`-th threshold of the table, the probes grouped
/// by the share of their own impostors (everyone else, each person's photos weighing one
/// person in all) closer than it, in
/// logarithmic bins of [`SPREAD_BINS_PER_DECADE`] per decade; each bin holds its probes and
/// their mean rate.
///
/// A stranger is not an average probe: some faces sit close to many others, most close to
/// none. Given the stranger, the N gallery entries are independent draws, so the chance that
/// one of them falls under the threshold is `1 - (1 - r)^N` for the stranger's own rate `r`,
/// and the false-identification rate is its mean over strangers
/// ([`ImpostorTable::fir`]). The independence formula `1 - (1 - far)^N` with the pooled
/// rate `far` (the mean of `r`) is larger by Jensen's inequality: it overstates the rate
/// and makes thresholds stricter than their target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeSpread {
    /// Probes counted, as people (each person's photos weigh one in all).
    pub probes: f64,
    /// Rows are kept at thresholds `thresholds[k * stride]`.
    pub stride: usize,
    /// Per kept threshold: `(probes as people, mean rate)` of each non-empty bin (probes with
    /// rate 0 are not listed).
    pub rows: Vec<Vec<(f64, f64)>>,
}

/// Every how many grid thresholds [`ImpostorTable::from_labelled`] keeps a row of the
/// [`ProbeSpread`].
pub const SPREAD_STRIDE: usize = 2;
/// Bins per decade of [`ProbeSpread`].
pub const SPREAD_BINS_PER_DECADE: f64 = 8.0;
/// Decades of [`ProbeSpread`]'s bins, down from rate 1 (rates below share the last bin).
const SPREAD_DECADES: f64 = 8.0;

impl ProbeSpread {
    fn bin(rate: f64) -> usize {
        let max = (SPREAD_DECADES * SPREAD_BINS_PER_DECADE) as usize;
        ((-rate.log10() * SPREAD_BINS_PER_DECADE).floor().max(0.0) as usize).min(max)
    }

    /// The false-identification rate at kept row `row` for `comparisons` entries. A
    /// probe's rate is resolved to one person in [`ProbeSpread::probes`], so galleries up to
    /// that many people are computed from the spread itself; a larger one is taken as
    /// independent blocks of that size, `1 - (1 - FIR(P))^(N/P)`, which by Jensen's inequality
    /// is an upper bound: its thresholds err on the strict side.
    fn fir_at(&self, row: usize, comparisons: usize) -> f64 {
        let n = comparisons.max(1) as f64;
        let people = self.probes.floor().max(1.0);
        if n > people {
            let block = self.mixture(row, people);
            return 1.0 - (1.0 - block).powf(n / people);
        }
        self.mixture(row, n)
    }

    /// The mean over probes of `1 - (1 - r)^n` at kept row `row`.
    fn mixture(&self, row: usize, n: f64) -> f64 {
        self.rows[row]
            .iter()
            .map(|&(w, r)| w * (1.0 - (1.0 - r).powf(n)))
            .sum::<f64>()
            / self.probes.max(f64::MIN_POSITIVE)
    }
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
        let stride = SPREAD_STRIDE;
        let kept = n_grid.div_ceil(stride);
        let n_bins = (SPREAD_DECADES * SPREAD_BINS_PER_DECADE) as usize + 1;
        // Per image: its impostors' distances in grid cells (pairs j > i also feed the pooled
        // histogram, each pair once), then its own rate at every kept threshold, binned.
        type Acc = (Vec<u64>, u64, Vec<Vec<(f64, f64)>>, f64);
        let empty = || -> Acc {
            (
                vec![0u64; n_grid + 1],
                0,
                vec![vec![(0f64, 0f64); n_bins]; kept],
                0.0,
            )
        };
        // A gallery holds people, not photos: a probe's own rate weighs each impostor photo by
        // one over its person's photos (someone with 500 photos counts once).
        let mut photos: std::collections::HashMap<&str, f64> = Default::default();
        for p in people {
            *photos.entry(p.as_str()).or_default() += 1.0;
        }
        let weight: Vec<f64> = people.iter().map(|p| 1.0 / photos[p.as_str()]).collect();
        let (hist, pairs, rows, probes) = (0..emb.len())
            .into_par_iter()
            .fold(empty, |(mut h, mut pairs, mut rows, mut probes), i| {
                let mut own = vec![0f64; n_grid + 1];
                let mut impostors = 0f64;
                for j in 0..emb.len() {
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
                    own[c] += weight[j];
                    impostors += weight[j];
                    if j > i {
                        h[c] += 1;
                        pairs += 1;
                    }
                }
                if impostors > 0.0 {
                    // Probes weigh as people too: each person's photos one in all.
                    probes += weight[i];
                    let mut acc = 0f64;
                    for (k, &o) in own[..n_grid].iter().enumerate() {
                        acc += o;
                        if k % stride == 0 && acc > 0.0 {
                            let rate = (acc / impostors).min(1.0);
                            let cell = &mut rows[k / stride][ProbeSpread::bin(rate)];
                            cell.0 += weight[i];
                            cell.1 += weight[i] * rate;
                        }
                    }
                }
                (h, pairs, rows, probes)
            })
            .reduce(empty, |(mut a, pa, mut ra, na), (b, pb, rb, nb)| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                for (x, y) in ra.iter_mut().zip(&rb) {
                    for (p, q) in x.iter_mut().zip(y) {
                        p.0 += q.0;
                        p.1 += q.1;
                    }
                }
                (a, pa + pb, ra, na + nb)
            });
        let spread = ProbeSpread {
            probes,
            stride,
            rows: rows
                .into_iter()
                .map(|row| {
                    row.into_iter()
                        .filter(|c| c.0 > 0.0)
                        .map(|(w, sum)| (w, sum / w))
                        .collect()
                })
                .collect(),
        };
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
            genuine: Some(GenuineRates::from_labelled(emb, people, &thresholds)),
            thresholds,
            below,
            spread: Some(spread),
        }
    }

    /// The expected share of enrolled people's photos named at threshold `t` with `photos`
    /// photos enrolled per person ([`GenuineRates`]: 1, or 3 and more; 2 half way), linear
    /// between grid points; `None` for a table without them.
    pub fn expected_dir(&self, t: f32, photos: usize) -> Option<f64> {
        let g = self.genuine.as_ref()?;
        let at = |v: &[f64]| -> f64 {
            let th = &self.thresholds;
            match th.iter().position(|&x| x >= t) {
                None => *v.last().unwrap_or(&1.0),
                Some(0) => v[0],
                Some(k) => {
                    let f = ((t - th[k - 1]) / (th[k] - th[k - 1])) as f64;
                    v[k - 1] + (v[k] - v[k - 1]) * f
                }
            }
        };
        Some(match photos {
            0 | 1 => at(&g.one),
            2 => (at(&g.one) + at(&g.three)) / 2.0,
            _ => at(&g.three),
        })
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

    /// The false-identification rate at threshold `t` when a stranger is compared with
    /// `comparisons` gallery entries: the mean over probes of `1 - (1 - r)^N`
    /// ([`ProbeSpread`]), linear between kept thresholds; without a spread, the
    /// independence formula [`expected_fir`] of the pooled rate.
    pub fn fir(&self, t: f32, comparisons: usize) -> f64 {
        let Some(spread) = self.spread.as_ref().filter(|s| !s.rows.is_empty()) else {
            return expected_fir(self.far(t), comparisons);
        };
        let at = |row: usize| -> f32 {
            self.thresholds[(row * spread.stride).min(self.thresholds.len() - 1)]
        };
        let last = spread.rows.len() - 1;
        if t <= at(0) {
            return spread.fir_at(0, comparisons);
        }
        if t >= at(last) {
            return spread.fir_at(last, comparisons);
        }
        let k = (1..=last).find(|&k| at(k) >= t).unwrap_or(last);
        let (t0, t1) = (at(k - 1), at(k));
        let (f0, f1) = (
            spread.fir_at(k - 1, comparisons),
            spread.fir_at(k, comparisons),
        );
        f0 + (f1 - f0) * ((t - t0) / (t1 - t0)) as f64
    }

    /// The largest threshold at which the false-identification rate for `comparisons`
    /// gallery entries ([`ImpostorTable::fir`]) is at most `fir`. Without a
    /// [`ProbeSpread`], the threshold of the per-comparison rate [`per_comparison_far`].
    pub fn threshold_for_fir(&self, fir: f64, comparisons: usize) -> f32 {
        let Some(spread) = self.spread.as_ref().filter(|s| !s.rows.is_empty()) else {
            return self.threshold_for_far(per_comparison_far(fir, comparisons));
        };
        // The rate rises with the threshold: bisect between the grid's ends.
        let (mut lo, mut hi) = (
            self.thresholds[0],
            self.thresholds
                [((spread.rows.len() - 1) * spread.stride).min(self.thresholds.len() - 1)],
        );
        if self.fir(lo, comparisons) > fir {
            return lo;
        }
        if self.fir(hi, comparisons) <= fir {
            return hi;
        }
        for _ in 0..40 {
            let mid = (lo + hi) / 2.0;
            if self.fir(mid, comparisons) <= fir {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
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

    #[test]
    fn spread_makes_the_false_identification_rate_exact_by_hand() {
        // a and b are 0.5 apart, c is opposite a (2.0) and 1.94 from b.
        let th = 2.0 * 0.25f32.asin();
        let emb = vec![vec![1.0, 0.0], vec![th.cos(), th.sin()], vec![-1.0, 0.0]];
        let people = names(&["a", "b", "c"]);
        let t = ImpostorTable::from_labelled(&emb, &people, "fp", "test", (0.0, 2.0, 0.5));
        let spread = t.spread.clone().unwrap();
        assert_eq!(
            (spread.probes, spread.stride, spread.rows.len()),
            (3.0, 2, 3)
        );
        // At 1.0 a and b each have one impostor of two below (rate 0.5), c none.
        assert_eq!(spread.rows[1].len(), 1);
        assert_eq!(spread.rows[1][0].0, 2.0);
        assert!((spread.rows[1][0].1 - 0.5).abs() < 1e-12);
        // A stranger is a, b or c: FIR(N) = (2/3) (1 - 0.5^N); at N = 1 1/3, at N = 2 1/2,
        // where the independence formula with the pooled rate 1/3 says 1 - (2/3)^2 = 5/9.
        assert!((t.fir(1.0, 1) - 1.0 / 3.0).abs() < 1e-9);
        assert!((t.fir(1.0, 2) - 0.5).abs() < 1e-9);
        assert!((expected_fir(t.far(1.0), 2) - 5.0 / 9.0).abs() < 1e-9);
        // Linear between kept rows (0 at 0.0): 1/6 at 0.5; the threshold for 1/4 is 0.75.
        assert!((t.fir(0.5, 1) - 1.0 / 6.0).abs() < 1e-9);
        assert!((t.threshold_for_fir(0.25, 1) - 0.75).abs() < 1e-5);
        // At 2.0: a 1/2, b 1 (both below), c 1/2 -> N = 1: 2/3.
        assert!((t.fir(2.0, 1) - 2.0 / 3.0).abs() < 1e-9);
        // A table without a spread falls back to the independence formula.
        let plain = ImpostorTable {
            spread: None,
            ..t.clone()
        };
        assert!((plain.fir(1.0, 2) - 5.0 / 9.0).abs() < 1e-9);
        assert!((plain.threshold_for_fir(0.19, 2) - plain.threshold_for_far(0.1)).abs() < 1e-6);
    }

    #[test]
    fn calibration_by_hand() {
        // Eight people, one photo each, mutually orthogonal: every impostor distance is
        // sqrt(2). Below it nobody is named (a tiny target: the derived threshold stays under
        // sqrt(2)); at a threshold past it (target 1) everybody is.
        let emb: Vec<Vec<f32>> = (0..8)
            .map(|i| (0..8).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
            .collect();
        let people = names(&["a", "b", "c", "d", "e", "f", "g", "h"]);
        let table = ImpostorTable::from_labelled(&emb, &people, "fp", "test", (0.0, 2.0, 0.001));
        let points = calibration(&people, &emb, &table, &[2, 6, 7], &[1e-6, 1.0], (3, 7));
        // Size 7 leaves one stranger of eight: fewer than a quarter, skipped.
        assert_eq!(points.len(), 4);
        for p in &points {
            // Two galleries sizes, 3 draws, 8 - n strangers each.
            assert_eq!(p.searches, 3 * (8 - p.identities));
            if p.target == 1.0 {
                assert!(
                    p.threshold > std::f32::consts::SQRT_2 && p.achieved == 1.0,
                    "{p:?}"
                );
            } else {
                assert!(
                    p.threshold < std::f32::consts::SQRT_2 && p.achieved == 0.0,
                    "{p:?}"
                );
            }
        }
        let (a, b) = halves(&people);
        assert_eq!(a.len() + b.len(), 8);
        assert!(a.iter().all(|i| !b.contains(i)));
    }

    #[test]
    fn splits_are_other_halves_and_cells_pool_by_hand() {
        let people: Vec<String> = (0..200).map(|i| format!("person {i}")).collect();
        let firsts: Vec<Vec<usize>> = (0..4).map(|s| halves_of(&people, s).0).collect();
        assert_eq!(firsts[0], halves(&people).0);
        for (s, first) in firsts.iter().enumerate() {
            // Every person on one side; about half on each; each split another one.
            assert!(
                (70..=130).contains(&first.len()),
                "split {s}: {}",
                first.len()
            );
            for other in &firsts[..s] {
                let shared = first.iter().filter(|i| other.contains(i)).count();
                assert!(shared < first.len() * 3 / 4, "split {s}");
            }
        }
        assert_eq!(halves_of(&people, 2), halves_of(&people, 2));
        assert_eq!(calibration_splits(250), 10);
        assert_eq!(calibration_splits(5749), 3);
        // Two tables' cells: 3 of 100 and 1 of 300 strangers named at 1 %, so 4 of 400 pooled
        // (1.0 of the target) with ratios 3.0 and 0.33; a cell only one has is left out.
        let cell = |identities, achieved, searches, threshold| CalibrationPoint {
            identities,
            target: 0.01,
            threshold,
            achieved,
            searches,
            range: None,
        };
        let runs = vec![
            vec![cell(10, 0.03, 100, -0.25), cell(30, 0.0, 100, -0.5)],
            vec![cell(10, 1.0 / 300.0, 300, -0.5)],
        ];
        let p = pooled(runs.into_iter());
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].identities, p[0].searches), (10, 400));
        assert!((p[0].achieved - 0.01).abs() < 1e-12 && (p[0].ratio() - 1.0).abs() < 1e-9);
        assert_eq!(p[0].threshold, -0.375);
        let (lo, hi) = p[0].range.unwrap();
        assert!(
            (lo - 1.0 / 3.0).abs() < 1e-9 && (hi - 3.0).abs() < 1e-9,
            "{lo} {hi}"
        );
        assert!(pooled(std::iter::empty()).is_empty());
        // The table prints the range beside the pooled ratio.
        let text = CalibrationReport {
            what: "test".into(),
            points: p,
        }
        .to_string();
        assert!(text.contains("| 1.00 (0.33-3.00) | 400"), "{text}");
    }

    #[test]
    fn spread_weighs_people_not_photos() {
        // b has two (identical) photos 0.5 from a; c is far from both. For a, b counts as one
        // person of two (rate 0.5 at 1.0, not 2/3 as photos would say); b's two photos weigh
        // one probe together.
        let th = 2.0 * 0.25f32.asin();
        let b = vec![th.cos(), th.sin()];
        let emb = vec![vec![1.0, 0.0], b.clone(), b, vec![-1.0, 0.0]];
        let people = names(&["a", "b", "b", "c"]);
        let t = ImpostorTable::from_labelled(&emb, &people, "fp", "test", (0.0, 2.0, 0.5));
        let spread = t.spread.clone().unwrap();
        assert!((spread.probes - 3.0).abs() < 1e-12);
        assert_eq!(spread.rows[1].len(), 1);
        let (w, r) = spread.rows[1][0];
        assert!(
            (w - 2.0).abs() < 1e-12 && (r - 0.5).abs() < 1e-12,
            "{w} {r}"
        );
        assert!((t.fir(1.0, 1) - 1.0 / 3.0).abs() < 1e-9);
        // The pooled table still counts photo pairs: (a,b) twice of five.
        assert_eq!(t.pairs, 5);
    }

    #[test]
    fn galleries_larger_than_the_table_are_independent_blocks() {
        // Three people (as in the spread test): at 1.0, FIR(N) = (2/3) (1 - 0.5^N) up to
        // N = 3; for N = 6, two independent blocks of 3: 1 - (1 - FIR(3))^2.
        let th = 2.0 * 0.25f32.asin();
        let emb = vec![vec![1.0, 0.0], vec![th.cos(), th.sin()], vec![-1.0, 0.0]];
        let people = names(&["a", "b", "c"]);
        let t = ImpostorTable::from_labelled(&emb, &people, "fp", "test", (0.0, 2.0, 0.5));
        let at3 = 2.0 / 3.0 * (1.0 - 0.125);
        assert!((t.fir(1.0, 3) - at3).abs() < 1e-9);
        assert!((t.fir(1.0, 6) - (1.0 - (1.0 - at3) * (1.0 - at3))).abs() < 1e-9);
        // More entries, never a lower rate.
        assert!(t.fir(1.0, 6) > t.fir(1.0, 3));
    }

    #[test]
    fn genuine_rates_by_hand() {
        // a: four photos, at 0, 0.3, 0.6 and 1.2 rad on the circle; b: one photo (not counted).
        let at = |r: f32| vec![r.cos(), r.sin()];
        let emb = vec![at(0.0), at(0.3), at(0.6), at(1.2), at(3.0)];
        let people = names(&["a", "a", "a", "a", "b"]);
        let t = ImpostorTable::from_labelled(&emb, &people, "fp", "test", (0.0, 2.0, 0.05));
        let g = t.genuine.clone().unwrap();
        assert_eq!((g.people_one, g.people_three), (1, 1));
        // The 6 pairs are 0.3, 0.3, 0.6, 0.6, 0.9 and 1.2 rad apart: chords 2 sin(d/2) of
        // 0.2989 (twice), 0.5910 (twice), 0.8699 and 1.1293 (ordered pairs: each twice).
        assert!((t.expected_dir(0.5, 1).unwrap() - 2.0 / 6.0).abs() < 1e-9);
        assert!((t.expected_dir(0.6, 1).unwrap() - 4.0 / 6.0).abs() < 1e-9);
        assert!((t.expected_dir(1.2, 1).unwrap() - 1.0).abs() < 1e-9);
        assert!(t.expected_dir(0.25, 1).unwrap() == 0.0);
        // Three photos: each photo against the mean of the other three; the outlier (1.2 rad)
        // is the farthest from the mean of the rest.
        let three = t.expected_dir(1.0, 3).unwrap();
        assert!(three > 0.0 && three <= 1.0);
        assert!(t.expected_dir(2.0, 3).unwrap() == 1.0);
        let plain = ImpostorTable { genuine: None, ..t };
        assert_eq!(plain.expected_dir(1.0, 1), None);
    }

    #[test]
    fn gated_splits_by_hand() {
        // a: 4 photos, the first unusable; b: 2 photos, none usable; c: 1 photo (stranger).
        let people = names(&["a", "a", "a", "a", "b", "b", "c"]);
        let usable = [false, true, true, true, false, false, true];
        let (plain, gated, left_out) = OpenSetSplit::gated(&people, 1, 0, &usable);
        assert_eq!(left_out, 1);
        assert_eq!(plain.gallery, vec![("a".to_string(), vec![0])]);
        assert_eq!(gated.gallery, vec![("a".to_string(), vec![1])]);
        // The same probes in both: a's photos enrolled in neither.
        assert_eq!(plain.probes, vec![(0, 2), (0, 3)]);
        assert_eq!(gated.probes, plain.probes);
        assert_eq!(
            (plain.strangers.clone(), gated.strangers),
            (vec![6], vec![6])
        );
    }
}
