//! Cohort-normalized identification: a probe's distance to a gallery entry, less how close
//! that entry sits to the rest of the gallery.
//!
//! Some enrolled faces lie in crowded parts of the embedding space: many strangers come close
//! to them, and they take most of a gallery's false identifications. Others lie apart, and a
//! genuine probe of theirs at the same distance is far more telling. The cohort score of a
//! probe `q` against an entry `e` is
//!
//! ```text
//! s(q, e) = d(q, e) - mean of the K smallest d(e, x), x an entry of another identity
//! ```
//!
//! with the gallery itself as the cohort (no outside faces needed) and [`COHORT_K`] = 5. The
//! probe is named as the identity of its lowest score when that score is under a threshold.
//!
//! A gallery's own crowding also moves with its size: a bigger gallery has nearer neighbours,
//! so every entry's cohort mean falls as the number of comparisons rises, and the two nearly
//! cancel. The threshold for a target false-identification rate therefore changes little
//! with the gallery's size (on LFW at 1 %: -0.35 at 10 identities, -0.22 at 3,000, where
//! the plain distance's goes from 0.99 to 0.68), and it carries over between face sets far
//! better ([`CohortThresholds`], measured on labelled photos).

use serde::{Deserialize, Serialize};

/// What identification compares with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Scoring {
    /// The L2 distance to the nearest entry.
    Distance,
    /// The default. The cohort score: the distance less the entry's mean distance to its nearest other
    /// people ([`cohort_means`]). On LFW (1,680 people, one photo each, 1 % of strangers
    /// named) it names 80.9 % of enrolled people's photos where the distance names 68.0 %.
    #[default]
    Cohort,
}

impl std::str::FromStr for Scoring {
    type Err = String;

    /// `cohort` or `distance`; anything else is refused with the choices.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cohort" => Ok(Scoring::Cohort),
            "distance" => Ok(Scoring::Distance),
            other => Err(format!(
                "{other:?}: use \"cohort\" (the default) or \"distance\""
            )),
        }
    }
}

impl Scoring {
    /// The name every front reports (`distance`, `cohort`).
    pub fn name(self) -> &'static str {
        match self {
            Scoring::Distance => "distance",
            Scoring::Cohort => "cohort",
        }
    }
}

/// Neighbours of another identity averaged into an entry's cohort mean.
pub const COHORT_K: usize = 5;

/// Below this many identities a gallery is searched by plain distance: a cohort of fewer
/// than [`COHORT_K`] others says little about crowding.
pub const COHORT_MIN_IDENTITIES: usize = COHORT_K + 1;

/// Each entry's cohort mean: the mean L2 distance from entry `i` (row `i` of `points`, unit
/// vectors of length `dim`) to its `k` nearest entries of another owner; fewer where fewer
/// exist, and 0 where none do (the score is then the plain distance).
pub fn cohort_means(points: &[f32], owner: &[usize], dim: usize, k: usize) -> Vec<f32> {
    nearest_others(points, owner, dim, k)
        .iter()
        .map(|l| list_mean(l))
        .collect()
}

/// An owner that marks a row as absent: it has no list and is in none.
pub const NO_OWNER: usize = usize::MAX;

/// Columns per tile of [`nearest_others`]: the tile (512 x 128 floats) stays in a core's
/// cache while a block of rows is compared with it.
const TILE: usize = 512;
/// Rows compared with one tile at a time: one matrix product of `BLOCK x TILE` dot products.
const BLOCK: usize = 64;

/// Each row's `k` nearest rows of another owner, `(distance, row)` nearest first, by
/// comparing every pair a tile at a time on all cores. Rows owned by [`NO_OWNER`] are
/// skipped.
///
/// The dot products of a block of rows with a tile come from one matrix product (`gemm`),
/// and a candidate is looked at only when it beats the `k`-th best so far, so the cost is
/// the product's: 20,000 rows of 128 in about 0.7 s on two cores. The distances kept are
/// recomputed with [`dot`], as a list kept up to date row by row computes them.
pub fn nearest_others(
    points: &[f32],
    owner: &[usize],
    dim: usize,
    k: usize,
) -> Vec<Vec<(f32, usize)>> {
    use rayon::prelude::*;
    let dim = dim.max(1);
    let n = owner.len().min(points.len() / dim);
    let row = |r: usize| &points[r * dim..(r + 1) * dim];
    (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .flat_map_iter(|b| {
            let block = b * BLOCK..((b + 1) * BLOCK).min(n);
            // Best `k` per row as (-dot, row): `offer`'s order, largest dot first.
            let mut best: Vec<Vec<(f32, usize)>> = vec![Vec::with_capacity(k + 1); block.len()];
            let mut dots = vec![0f32; block.len() * TILE];
            for start in (0..n).step_by(TILE) {
                let cols = (start + TILE).min(n) - start;
                products(
                    &points[block.start * dim..block.end * dim],
                    &points[start * dim..(start + cols) * dim],
                    dim,
                    &mut dots[..block.len() * cols],
                );
                for ((list, r), d) in best.iter_mut().zip(block.clone()).zip(dots.chunks(cols)) {
                    if owner[r] == NO_OWNER || k == 0 {
                        continue;
                    }
                    let mut floor = kth(list, k);
                    for (c, &x) in d.iter().enumerate() {
                        let j = start + c;
                        if x > floor && owner[j] != NO_OWNER && owner[j] != owner[r] {
                            offer(list, (-x, j), k);
                            floor = kth(list, k);
                        }
                    }
                }
            }
            best.into_iter().zip(block).map(move |(list, r)| {
                let mut list: Vec<(f32, usize)> = list
                    .into_iter()
                    .map(|(_, j)| (unit_distance(dot(row(r), row(j))), j))
                    .collect();
                list.sort_by(|a, b| a.0.total_cmp(&b.0));
                list
            })
        })
        .collect()
}

/// The dot product a candidate must beat to enter a list of `k` negated dot products.
fn kth(list: &[(f32, usize)], k: usize) -> f32 {
    if list.len() >= k {
        -list[k - 1].0
    } else {
        f32::NEG_INFINITY
    }
}

/// `out[i * cols + j] = a_i . b_j` for the rows of `a` and `b` (`dim` floats each),
/// `cols = b.len() / dim`: one matrix product, on this thread.
fn products(a: &[f32], b: &[f32], dim: usize, out: &mut [f32]) {
    let (m, cols) = (a.len() / dim, b.len() / dim);
    assert!(out.len() >= m * cols && a.len() >= m * dim && b.len() >= cols * dim);
    // SAFETY: `a` is m x dim (row stride dim), `b` read as its transpose dim x cols (column
    // stride dim), `out` m x cols (row stride cols); the assertion above bounds all three.
    unsafe {
        gemm::gemm(
            m,
            cols,
            dim,
            out.as_mut_ptr(),
            1,
            cols as isize,
            false,
            a.as_ptr(),
            1,
            dim as isize,
            b.as_ptr(),
            dim as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Inserts `cand` into `list`, kept sorted by distance and at most `k` long.
pub fn offer(list: &mut Vec<(f32, usize)>, cand: (f32, usize), k: usize) {
    if list.len() >= k && list.last().is_some_and(|l| cand.0 >= l.0) {
        return;
    }
    let at = list.partition_point(|&(d, _)| d <= cand.0);
    list.insert(at, cand);
    list.truncate(k);
}

/// The mean distance of a list (0 for none).
pub fn list_mean(list: &[(f32, usize)]) -> f32 {
    match list.len() {
        0 => 0.0,
        n => list.iter().map(|(d, _)| d).sum::<f32>() / n as f32,
    }
}

/// A dot product in 16 independent lanes, which the compiler turns into vector code.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The L2 distance of two unit vectors from their dot product.
pub fn unit_distance(dot: f32) -> f32 {
    (2.0 - 2.0 * dot).max(0.0).sqrt()
}

/// The cohort score ([`cohort_means`] subtracted from a distance).
pub fn cohort_score(distance: f32, cohort_mean: f32) -> f32 {
    distance - cohort_mean
}

/// Thresholds of the cohort score for target false-identification rates and gallery sizes,
/// measured on labelled photos ([`CohortThresholds::from_labelled`]): galleries of one photo
/// per person drawn from the people, one photo of each other person as a stranger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohortThresholds {
    /// The weights fingerprint.
    pub fingerprint: String,
    /// Where the photos came from.
    pub source: String,
    /// Cohort neighbours ([`COHORT_K`]).
    pub k: usize,
    /// Gallery sizes measured (identities), ascending.
    pub sizes: Vec<usize>,
    /// Target false-identification rates, descending.
    pub targets: Vec<f64>,
    /// Per size, per target: the score under which that share of strangers fell.
    pub thresholds: Vec<Vec<f32>>,
    /// Stranger searches per size (over all draws).
    pub searches: Vec<usize>,
    /// Per size, per target: the share of enrolled people's photos named correctly at the
    /// threshold, with one photo per person and with the centroid of three.
    #[serde(default)]
    pub dir: Vec<Vec<[f64; 2]>>,
}

/// Gallery sizes a cohort table is measured at (those leaving a quarter of the people as
/// strangers).
pub const COHORT_SIZES: [usize; 7] = [10, 30, 100, 300, 1000, 2000, 3000];

/// The fewest labelled people a cohort table can be measured on: the smallest size with a
/// quarter of the people left as strangers.
pub const COHORT_MIN_PEOPLE: usize = (COHORT_SIZES[0] * 4).div_ceil(3);

/// Targets a cohort table is measured at.
pub const COHORT_TARGETS: [f64; 5] = [0.1, 0.03, 0.01, 0.003, 0.001];

/// The share of the target a table is set to: thresholds are taken at 0.9 of each target,
/// so that a set of strangers a little unlike the table's own stays under it.
pub const COHORT_AIM: f64 = 0.9;

/// Galleries drawn per size when a cohort table is measured.
pub const COHORT_DRAWS: usize = 40;

/// What [`draw_scores`] measured over its draws.
#[derive(Debug, Clone, Default)]
pub struct DrawnScores {
    /// Each stranger's best score.
    pub strangers: Vec<f32>,
    /// Each genuine probe's best score, and whether it was its own person's.
    pub probes: Vec<(f32, bool)>,
}

/// Each stranger's best score against `draws` galleries of `n` people drawn from `people`
/// (a stranger is one photo, at random, of each person not drawn), and each genuine probe's.
/// A person in the gallery enrols the normalized mean of their first `enrol` photos (all but
/// one where they have fewer, one where they have one); for a person who enrolled all
/// `enrol`, one of their other photos, at random, is a genuine probe. `cohort`: the cohort score with that many neighbours, else the
/// plain distance. The strangers drawn depend on `rng` alone, not on `enrol`.
pub fn draw_scores(
    people: &[String],
    emb: &[Vec<f32>],
    (n, enrol, draws): (usize, usize, usize),
    rng: &mut crate::rng::Rng,
    cohort: Option<usize>,
) -> DrawnScores {
    use rayon::prelude::*;
    let mut order: Vec<&str> = Vec::new();
    let mut photos: std::collections::HashMap<&str, Vec<usize>> = Default::default();
    for (i, p) in people.iter().enumerate() {
        let list = photos.entry(p.as_str()).or_default();
        if list.is_empty() {
            order.push(p);
        }
        list.push(i);
    }
    let dim = emb.first().map_or(0, Vec::len).max(1);
    // Probes are drawn on a generator of their own, so the strangers stay those of `rng`.
    let mut probe_rng = crate::rng::Rng::new(0x9e37_79b9 ^ ((n as u64) << 8) ^ enrol as u64);
    let mut out = DrawnScores::default();
    for _ in 0..draws.max(1) {
        let mut shuffled = order.clone();
        rng.shuffle(&mut shuffled);
        let n = n.min(shuffled.len());
        let mut gallery: Vec<f32> = Vec::with_capacity(n * dim);
        let mut probes: Vec<(usize, usize)> = Vec::new();
        for (g, p) in shuffled[..n].iter().enumerate() {
            let imgs = &photos[p];
            let k = enrol.max(1).min(imgs.len().saturating_sub(1)).max(1);
            let mut c = vec![0f32; dim];
            for &i in &imgs[..k] {
                c.iter_mut().zip(&emb[i]).for_each(|(a, b)| *a += b);
            }
            gallery.extend(crate::embed::l2_normalize(&c));
            // Probes only of people who enrolled all `enrol` photos.
            if imgs.len() > k && k == enrol.max(1) {
                probes.push((g, imgs[k + probe_rng.below(imgs.len() - k)]));
            }
        }
        let means = match cohort {
            Some(k) if n >= COHORT_MIN_IDENTITIES => {
                cohort_means(&gallery, &(0..n).collect::<Vec<_>>(), dim, k)
            }
            _ => vec![0.0; n],
        };
        let best = |q: &[f32]| -> (f32, usize) {
            gallery
                .chunks_exact(dim)
                .zip(&means)
                .enumerate()
                .map(|(g, (row, &m))| {
                    let dot: f32 = row.iter().zip(q).map(|(a, b)| a * b).sum();
                    (cohort_score((2.0 - 2.0 * dot).max(0.0).sqrt(), m), g)
                })
                .fold((f32::MAX, usize::MAX), |a, b| if b.0 < a.0 { b } else { a })
        };
        let strangers: Vec<usize> = shuffled[n..]
            .iter()
            .map(|p| photos[p][rng.below(photos[p].len())])
            .collect();
        out.strangers
            .par_extend(strangers.par_iter().map(|&i| best(&emb[i]).0));
        out.probes.par_extend(probes.par_iter().map(|&(g, i)| {
            let (s, who) = best(&emb[i]);
            (s, who == g)
        }));
    }
    out
}

/// The score under which a share `rate` of `scores` falls (strictly): the largest threshold
/// that names at most `floor(rate * n)` of them.
pub fn quantile_below(scores: &[f32], rate: f64) -> f32 {
    let mut s = scores.to_vec();
    s.sort_by(f32::total_cmp);
    let allowed = (rate * s.len() as f64).floor() as usize;
    s.get(allowed).copied().unwrap_or(f32::MAX)
}

impl CohortThresholds {
    /// Measures the table on labelled photos: for each of `sizes` (those that leave a quarter
    /// of the people as strangers), `draws` galleries, reproducibly from `seed`.
    pub fn from_labelled(
        people: &[String],
        emb: &[Vec<f32>],
        (fingerprint, source): (&str, &str),
        sizes: &[usize],
        targets: &[f64],
        (draws, seed): (usize, u64),
    ) -> Self {
        let distinct = people
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len();
        let mut rng = crate::rng::Rng::new(seed.max(1));
        let mut table = Self {
            fingerprint: fingerprint.into(),
            source: source.into(),
            k: COHORT_K,
            sizes: Vec::new(),
            targets: targets.to_vec(),
            thresholds: Vec::new(),
            searches: Vec::new(),
            dir: Vec::new(),
        };
        let mut genuine = Vec::new();
        for &n in sizes
            .iter()
            .filter(|&&n| n >= COHORT_MIN_IDENTITIES && n * 4 <= distinct * 3)
        {
            let one = draw_scores(people, emb, (n, 1, draws), &mut rng, Some(COHORT_K));
            let three = draw_scores(people, emb, (n, 3, draws), &mut rng, Some(COHORT_K));
            table.sizes.push(n);
            table.searches.push(one.strangers.len());
            table.thresholds.push(
                targets
                    .iter()
                    .map(|&t| quantile_below(&one.strangers, t * COHORT_AIM))
                    .collect(),
            );
            genuine.push([one.probes, three.probes]);
        }
        // Each size keeps its own quantiles. At small rates a bigger gallery's threshold can be
        // the stricter one: its entries' cohorts are nearer, but look-alike pairs, which the
        // cohort does not discount, come up in proportion to its size.
        // The genuine side at the thresholds kept: probes named as themselves under them.
        let named = |probes: &[(f32, bool)], t: f32| {
            probes.iter().filter(|p| p.1 && p.0 < t).count() as f64 / probes.len().max(1) as f64
        };
        table.dir = table
            .thresholds
            .iter()
            .zip(&genuine)
            .map(|(row, [one, three])| {
                row.iter()
                    .map(|&t| [named(one, t), named(three, t)])
                    .collect()
            })
            .collect();
        table
    }

    /// The expected share of enrolled people's photos named at the threshold of `fir` and
    /// `identities`, with one photo per person and with three (interpolated as
    /// [`CohortThresholds::threshold_for_fir`], but extended past the sizes measured: the
    /// share keeps falling as a gallery grows); `None` for a table without them.
    pub fn expected_dir(&self, fir: f64, identities: usize) -> Option<[f64; 2]> {
        if self.dir.len() != self.sizes.len() || self.dir.is_empty() {
            return None;
        }
        let mut out = [0f64; 2];
        for (j, o) in out.iter_mut().enumerate() {
            let rows: Vec<Vec<f32>> = self
                .dir
                .iter()
                .map(|r| r.iter().map(|d| d[j] as f32).collect())
                .collect();
            *o = (self.at(&rows, fir, identities, true)? as f64).clamp(0.0, 1.0);
        }
        Some(out)
    }

    /// The threshold for a target rate `fir` and a gallery of `identities`: linear in the
    /// logarithm of the size between the sizes measured (the largest size's beyond it: from
    /// 1 % up the threshold rises with size, so that side is the strict one), and in the logarithm of
    /// the rate between targets (extrapolated from the nearest two beyond them). `None` for an
    /// empty table.
    pub fn threshold_for_fir(&self, fir: f64, identities: usize) -> Option<f32> {
        self.at(&self.thresholds, fir, identities, false)
    }

    /// A per-size, per-target table read at `fir` and `identities` (see
    /// [`CohortThresholds::threshold_for_fir`]); `extend`: sizes beyond those measured are
    /// extended linearly in log size from the nearest two, instead of held.
    fn at(&self, rows: &[Vec<f32>], fir: f64, identities: usize, extend: bool) -> Option<f32> {
        let targets = log_all(&self.targets);
        let per_size: Vec<f32> = rows
            .iter()
            .map(|r| interpolate(&targets, r, fir.ln()))
            .collect();
        let sizes: Vec<f64> = self.sizes.iter().map(|&s| s as f64).collect();
        match per_size.len() {
            0 => None,
            1 => Some(per_size[0]),
            _ => {
                let mut x = identities.max(1) as f64;
                if !extend {
                    x = x.clamp(sizes[0], sizes[sizes.len() - 1]);
                }
                Some(interpolate(&log_all(&sizes), &per_size, x.ln()))
            }
        }
    }
}

fn log_all(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x.max(f64::MIN_POSITIVE).ln()).collect()
}

/// `ys` at `x` on the polyline through `(xs, ys)` (`xs` monotone, either way), extended
/// linearly past its ends.
fn interpolate(xs: &[f64], ys: &[f32], x: f64) -> f32 {
    match xs.len() {
        0 => 0.0,
        1 => ys[0],
        n => {
            let asc = xs[n - 1] > xs[0];
            let pos = xs.partition_point(|&v| if asc { v < x } else { v > x });
            let i = pos.clamp(1, n - 1);
            let (x0, x1, y0, y1) = (xs[i - 1], xs[i], ys[i - 1] as f64, ys[i] as f64);
            if (x1 - x0).abs() < 1e-12 {
                return y0 as f32;
            }
            (y0 + (y1 - y0) * (x - x0) / (x1 - x0)) as f32
        }
    }
}

/// The cohort table shipped for the Keras FaceNet weights, measured on LFW by
/// `facenet evaluate --open-set --images lfw/ --cohort-table FILE`; `None` for other weights.
pub fn bundled_cohort(fingerprint: &str) -> Option<CohortThresholds> {
    static KERAS: std::sync::OnceLock<Option<CohortThresholds>> = std::sync::OnceLock::new();
    KERAS
        .get_or_init(|| serde_json::from_str(include_str!("../../data/cohort-keras-128.json")).ok())
        .as_ref()
        .filter(|t| t.fingerprint == fingerprint)
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(deg: f32) -> Vec<f32> {
        let r = deg.to_radians();
        vec![r.cos(), r.sin()]
    }

    fn dist(a: f32, b: f32) -> f32 {
        let d: f32 = (a - b).to_radians();
        (2.0 - 2.0 * d.cos()).sqrt()
    }

    #[test]
    fn cohort_means_by_hand() {
        // Four entries on a circle at 0, 10, 30 and 100 degrees; the first two are one person.
        let pts: Vec<f32> = [0.0, 10.0, 30.0, 100.0]
            .iter()
            .flat_map(|&d| unit(d))
            .collect();
        let owner = [0, 0, 1, 2];
        let m = cohort_means(&pts, &owner, 2, 2);
        // Entry 0: its own person's entry 1 is skipped; nearest others are 30 and 100.
        assert!((m[0] - (dist(0.0, 30.0) + dist(0.0, 100.0)) / 2.0).abs() < 1e-5);
        assert!((m[1] - (dist(10.0, 30.0) + dist(10.0, 100.0)) / 2.0).abs() < 1e-5);
        // Entry 2: 10 and 0 (the two nearest, both person 0's).
        assert!((m[2] - (dist(30.0, 10.0) + dist(30.0, 0.0)) / 2.0).abs() < 1e-5);
        let one = cohort_means(&pts, &owner, 2, 1);
        assert!((one[3] - dist(100.0, 30.0)).abs() < 1e-5);
        // Nobody else: 0, the plain distance.
        assert_eq!(cohort_means(&pts[..4], &[0, 0], 2, 5), vec![0.0, 0.0]);
        assert!((cohort_score(0.5, 0.75) + 0.25).abs() < 1e-7);
    }

    /// The lists from the tiled products equal those of every pair compared one by one, on
    /// more rows than a block and a tile (so across their edges), with absent rows and
    /// people of several rows.
    #[test]
    fn tiled_lists_equal_pair_by_pair() {
        let (n, dim, k) = (TILE + BLOCK + 17, 24, COHORT_K);
        assert!(n > TILE);
        let mut rng = crate::rng::Rng::new(11);
        let mut pts = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let v: Vec<f32> = (0..dim).map(|_| rng.unit() as f32 - 0.5).collect();
            pts.extend(crate::embed::l2_normalize(&v));
        }
        let owner: Vec<usize> = (0..n)
            .map(|i| if i % 37 == 5 { NO_OWNER } else { i / 3 })
            .collect();
        let lists = nearest_others(&pts, &owner, dim, k);
        let row = |r: usize| &pts[r * dim..(r + 1) * dim];
        for r in 0..n {
            let mut want = Vec::new();
            if owner[r] != NO_OWNER {
                for j in 0..n {
                    if owner[j] != NO_OWNER && owner[j] != owner[r] {
                        offer(&mut want, (unit_distance(dot(row(r), row(j))), j), k);
                    }
                }
            }
            assert_eq!(lists[r], want, "row {r}");
        }
    }

    #[test]
    fn quantiles_and_interpolation_by_hand() {
        let s: Vec<f32> = (0..100).map(|i| i as f32).collect();
        // 10 % may fall strictly below: the 11th score.
        assert_eq!(quantile_below(&s, 0.1), 10.0);
        assert_eq!(quantile_below(&s, 0.0), 0.0);
        let t = CohortThresholds {
            fingerprint: "f".into(),
            source: "hand".into(),
            k: COHORT_K,
            sizes: vec![10, 1000],
            targets: vec![0.1, 0.01],
            thresholds: vec![vec![-0.2, -0.4], vec![-0.1, -0.2]],
            searches: vec![1, 1],
            dir: vec![vec![[0.9, 0.95], [0.5, 0.7]], vec![[0.7, 0.9], [0.3, 0.5]]],
        };
        let close = |a: Option<f32>, b: f32| (a.unwrap() - b).abs() < 1e-5;
        assert!(close(t.threshold_for_fir(0.1, 10), -0.2));
        assert!(close(t.threshold_for_fir(0.01, 1000), -0.2));
        // Half way in log size (100) and in log rate (sqrt(0.1 * 0.01)).
        assert!(close(t.threshold_for_fir(0.1, 100), -0.15));
        assert!(close(t.threshold_for_fir(0.1f64.powf(1.5), 10), -0.3));
        // Beyond the sizes: the ends; beyond the rates: extended (0.001 at 10: -0.6).
        assert!(close(t.threshold_for_fir(0.1, 5), -0.2));
        assert!(close(t.threshold_for_fir(0.1, 100_000), -0.1));
        assert!(close(t.threshold_for_fir(0.001, 10), -0.6));
        // The genuine side is read the same way: half way in log size at 10 %.
        let [one, three] = t.expected_dir(0.1, 100).unwrap();
        assert!((one - 0.8).abs() < 1e-6 && (three - 0.925).abs() < 1e-6);
        // Extended past 1 %, then held within 0..1.
        assert_eq!(t.expected_dir(1e-4, 1000).unwrap(), [0.0, 0.0]);
        // Past the sizes measured the share is extended (0.1 a decade: 0.6 at 10,000), where
        // the threshold is held.
        let [far, _] = t.expected_dir(0.1, 10_000).unwrap();
        assert!((far - 0.6).abs() < 1e-6, "{far}");
        let empty = CohortThresholds {
            sizes: vec![],
            thresholds: vec![],
            dir: vec![],
            ..t
        };
        assert_eq!(empty.threshold_for_fir(0.01, 10), None);
        assert_eq!(empty.expected_dir(0.01, 10), None);
    }

    #[test]
    fn a_crowded_entry_is_discounted() {
        // Person A sits among three others (at 20, 25, 30 degrees); person E alone at 180.
        // A probe at 8 degrees from A and one at 8 degrees from E: plain distance treats them
        // alike; the cohort score favours E's, whose neighbours are far.
        let names: Vec<f32> = [0.0, 20.0, 25.0, 30.0, 180.0].to_vec();
        let pts: Vec<f32> = names.iter().flat_map(|&d| unit(d)).collect();
        let owner = [0, 1, 2, 3, 4];
        let m = cohort_means(&pts, &owner, 2, 3);
        let near_a = cohort_score(dist(8.0, 0.0), m[0]);
        let near_e = cohort_score(dist(188.0, 180.0), m[4]);
        assert!(near_e < near_a - 0.5, "{near_e} vs {near_a}");
    }
}
