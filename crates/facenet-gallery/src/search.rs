//! Nearest-identity search over all enrolled embeddings.
//!
//! Exact: for unit vectors, `|a - b|^2 = 2 - 2 a.b`, so one pass of dot products over a
//! contiguous `n x d` matrix ranks every face; the best face of each identity ranks the
//! identities. At 128-d this is ~13 M multiply-adds per query for 10^5 faces (13.5 ms on one
//! core; see `facenet bench search`).
//!
//! Approximate: with an HNSW graph attached ([`SearchIndex::build_ann`], used by the CLI from
//! [`crate::ann::ANN_MIN_FACES`] faces on), a query visits a few thousand faces instead of
//! all of them; the identities are ranked from its nearest faces.
//!
//! Live: [`SearchIndex::replace_identity`] swaps one identity's rows for its current faces in
//! place (the old rows are marked dead, left out of every search and of the graph, and the
//! matrix is compacted once they are many), so a gallery handle follows enrolments, renames
//! and deletions at a cost that grows with what changed, not with the gallery.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ann::{AnnConfig, AnnIndex};
use crate::cohort::{Neighbours, Rows};
use crate::{FaceRecord, GalleryError, Result};
use facenet::eval::cohort::cohort_score;
pub use facenet::eval::openset::GalleryRule;

/// One identity's best match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Match {
    /// Identity name.
    pub identity: String,
    /// L2 distance between unit embeddings (0..2) to its closest enrolled face.
    pub distance: f32,
    /// That face's source.
    pub source: String,
    /// Its cohort score, when ranked by it ([`SearchIndex::search_cohort`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort_score: Option<f32>,
}

/// All enrolled faces as one matrix.
#[derive(Debug, Clone, Default)]
pub struct SearchIndex {
    dim: usize,
    data: Vec<f32>,
    labels: Vec<usize>,
    sources: Vec<String>,
    names: Vec<String>,
    label_of: std::collections::HashMap<String, usize>,
    /// Gallery row ids, when built from stored faces (keys a saved graph).
    ids: Vec<i64>,
    ann: Option<Arc<AnnIndex>>,
    rule: GalleryRule,
    /// The rows of each label (dead rows removed).
    rows_of: Vec<Vec<usize>>,
    /// Rows left out of searches ([`SearchIndex::replace_identity`]); `dead.len()` may be
    /// shorter than the rows (a missing entry is alive).
    dead: Vec<bool>,
    /// How many rows are dead.
    num_dead: usize,
    /// Each row's nearest rows of other identities, once a cohort search asked for them;
    /// kept up to date by every change from then on.
    cohort: std::sync::OnceLock<Neighbours>,
}

/// A row's label once the row is dead.
const DEAD: usize = facenet::eval::cohort::NO_OWNER;

impl SearchIndex {
    /// Builds the index from stored faces.
    pub fn new(faces: &[FaceRecord]) -> Result<Self> {
        let mut idx = Self::default();
        for f in faces {
            idx.push(&f.identity, &f.embedding, &f.source)?;
        }
        idx.ids = faces.iter().map(|f| f.id).collect();
        Ok(idx)
    }

    /// Builds the index under a rule: every face ([`GalleryRule::NearestSample`], as
    /// [`SearchIndex::new`]) or one point per identity, the normalized mean of its unit
    /// embeddings ([`GalleryRule::Centroid`]; a match's `source` then says how many faces).
    pub fn with_rule(faces: &[FaceRecord], rule: GalleryRule) -> Result<Self> {
        if rule == GalleryRule::NearestSample {
            return Self::new(faces);
        }
        let mut by_name: std::collections::BTreeMap<&str, Vec<&FaceRecord>> = Default::default();
        for f in faces {
            by_name.entry(f.identity.as_str()).or_default().push(f);
        }
        let mut idx = Self::default();
        for (name, faces) in by_name {
            let (c, source) = centroid(&faces)?;
            idx.push(name, &c, &source)?;
        }
        // The saved graph's key: any change of faces changes the centroids.
        idx.ids = faces.iter().map(|f| f.id).collect();
        idx.rule = rule;
        Ok(idx)
    }

    /// The rule the index was built under.
    pub fn rule(&self) -> GalleryRule {
        self.rule
    }

    /// Embedding length (0 while empty).
    pub fn dim(&self) -> usize {
        self.dim
    }

    fn check_dim(&self, what: &str, len: usize) -> Result<()> {
        if !self.data.is_empty() && len != self.dim {
            return Err(GalleryError::Invalid(format!(
                "{what} has {len} values, the gallery's embeddings have {}",
                self.dim
            )));
        }
        Ok(())
    }

    /// Adds one face; an embedding of another length than the others is refused. An
    /// attached graph gains it too.
    pub fn push(&mut self, identity: &str, embedding: &[f32], source: &str) -> Result<()> {
        self.check_dim(&format!("the embedding of {source}"), embedding.len())?;
        if self.data.is_empty() {
            self.dim = embedding.len();
        }
        let label = match self.label_of.get(identity) {
            Some(&i) => i,
            None => {
                self.names.push(identity.to_string());
                self.rows_of.push(Vec::new());
                self.label_of
                    .insert(identity.to_string(), self.names.len() - 1);
                self.names.len() - 1
            }
        };
        let row = self.labels.len();
        if let Some(ann) = &self.ann {
            ann.add(row as u64, embedding)?;
        }
        self.data.extend_from_slice(embedding);
        self.labels.push(label);
        self.rows_of[label].push(row);
        self.sources.push(source.to_string());
        if let Some(n) = self.cohort.get_mut() {
            let rows = Rows {
                data: &self.data,
                dim: self.dim,
                labels: &self.labels,
            };
            n.added(&rows, row);
        }
        Ok(())
    }

    /// Replaces the rows of `identity` by `faces` (all of that identity, as the store now
    /// holds them; none when it was removed or renamed away): its faces under the
    /// nearest-sample rule, their centroid under the centroid rule. The old rows are left out
    /// of searches at once and the matrix is compacted when more than half of it is dead.
    pub fn replace_identity(&mut self, identity: &str, faces: &[FaceRecord]) -> Result<()> {
        if let Some(f) = faces.iter().find(|f| f.identity != identity) {
            return Err(GalleryError::Invalid(format!(
                "{}: a face of `{}` given as one of `{identity}`",
                f.source, f.identity
            )));
        }
        if let Some(&label) = self.label_of.get(identity) {
            let gone = std::mem::take(&mut self.rows_of[label]);
            for &row in &gone {
                if let Some(ann) = &self.ann {
                    ann.remove(row as u64)?;
                }
                if self.dead.len() <= row {
                    self.dead.resize(row + 1, false);
                }
                self.dead[row] = true;
                self.labels[row] = DEAD;
                self.num_dead += 1;
            }
            if let Some(n) = self.cohort.get_mut() {
                let rows = Rows {
                    data: &self.data,
                    dim: self.dim,
                    labels: &self.labels,
                };
                n.removed(&rows, &gone);
            }
        }
        match self.rule {
            GalleryRule::NearestSample => {
                for f in faces {
                    self.push(identity, &f.embedding, &f.source)?;
                }
            }
            GalleryRule::Centroid if !faces.is_empty() => {
                let (c, source) = centroid(&faces.iter().collect::<Vec<_>>())?;
                self.push(identity, &c, &source)?;
            }
            GalleryRule::Centroid => {}
        }
        if self.num_dead > 1024 && self.num_dead > self.len() {
            self.compact()?;
        }
        Ok(())
    }

    /// Drops the dead rows (and rebuilds an attached graph over the rest).
    fn compact(&mut self) -> Result<()> {
        let mut next = Self {
            rule: self.rule,
            ..Self::default()
        };
        for row in 0..self.labels.len() {
            if self.labels[row] != DEAD {
                let e = &self.data[row * self.dim..(row + 1) * self.dim];
                next.push(&self.names[self.labels[row]], e, &self.sources[row])?;
            }
        }
        if let Some(ann) = &self.ann {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            next.build_ann(ann.config(), threads)?;
        }
        *self = next;
        Ok(())
    }

    /// Rows held, dead ones included.
    #[cfg(test)]
    pub(crate) fn rows(&self) -> usize {
        self.labels.len()
    }

    /// Whether `row` is searched.
    fn alive(&self, row: usize) -> bool {
        !self.dead.get(row).copied().unwrap_or(false)
    }

    /// Number of faces (of identities, under the centroid rule) searched.
    pub fn len(&self) -> usize {
        self.labels.len() - self.num_dead
    }

    /// Whether no face is enrolled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Dot products of the query with every row (dead ones too: the callers skip them).
    fn dots(&self, q: &[f32]) -> Vec<f32> {
        self.data
            .chunks_exact(self.dim.max(1))
            .map(|row| row.iter().zip(q).map(|(a, b)| a * b).sum())
            .collect()
    }

    /// The `k` nearest faces (row, L2 distance), nearest first.
    pub fn nearest_faces(&self, q: &[f32], k: usize) -> Result<Vec<(usize, f32)>> {
        self.check_dim("the query", q.len())?;
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let dots = self.dots(q);
        let mut idx: Vec<usize> = (0..dots.len()).filter(|&i| self.alive(i)).collect();
        let k = k.min(idx.len());
        idx.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| dots[b].total_cmp(&dots[a]));
        idx.truncate(k);
        idx.sort_by(|&a, &b| dots[b].total_cmp(&dots[a]));
        Ok(idx.into_iter().map(|i| (i, dist(dots[i]))).collect())
    }

    /// Builds an HNSW graph over the faces on `threads` threads; [`SearchIndex::search`]
    /// uses it from then on.
    pub fn build_ann(&mut self, config: AnnConfig, threads: usize) -> Result<()> {
        let ann = AnnIndex::build(&self.data, self.dim, config, threads)?;
        for row in (0..self.labels.len()).filter(|&r| !self.alive(r)) {
            ann.remove(row as u64)?;
        }
        self.ann = Some(Arc::new(ann));
        Ok(())
    }

    /// The attached graph, if any.
    pub fn ann(&self) -> Option<&AnnIndex> {
        self.ann.as_deref()
    }

    /// Attaches a graph saved at `path` if its key file says it was built from exactly these
    /// faces; otherwise builds one and saves it there (with `path.json` as key file).
    /// Returns whether the saved graph was reused.
    pub fn load_or_build_ann(
        &mut self,
        path: &Path,
        config: AnnConfig,
        threads: usize,
    ) -> Result<bool> {
        let key_path = path.with_extension("json");
        let key = serde_json::json!({
            "faces": self.len(),
            "dim": self.dim,
            "ids": fnv1a(&self.ids),
            "config": config,
            "rule": self.rule,
        });
        let saved: Option<serde_json::Value> = std::fs::read(&key_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if saved.as_ref() == Some(&key) && path.is_file() {
            let ann = AnnIndex::load(path, self.dim, config)?;
            if ann.len() == self.len() {
                self.ann = Some(Arc::new(ann));
                return Ok(true);
            }
        }
        self.build_ann(config, threads)?;
        if let Some(ann) = &self.ann {
            ann.save(path)?;
            let tmp = key_path.with_extension("json.tmp");
            let io = |source: std::io::Error| GalleryError::Io {
                path: key_path.display().to_string(),
                source,
            };
            std::fs::write(&tmp, key.to_string()).map_err(io)?;
            std::fs::rename(&tmp, &key_path).map_err(io)?;
        }
        Ok(false)
    }

    /// The best `k` identities (each by its closest face), nearest first: through the HNSW
    /// graph when one is attached, else exact.
    pub fn search(&self, q: &[f32], k: usize) -> Result<Vec<Match>> {
        self.check_dim("the query", q.len())?;
        if let Some(ann) = &self.ann {
            // The k best identities are among the nearest faces; ask for several per identity.
            let faces = ann.nearest(q, (8 * k).max(32))?;
            return Ok(self.rank(faces.into_iter(), k, None));
        }
        self.search_exact(q, k)
    }

    /// The best `k` identities by one exact pass over all faces.
    pub fn search_exact(&self, q: &[f32], k: usize) -> Result<Vec<Match>> {
        self.check_dim("the query", q.len())?;
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let dots = self.dots(q);
        Ok(self.rank(dots.into_iter().enumerate(), k, None))
    }

    /// Ranks identities by their best face among `(face, dot)` candidates (dead rows
    /// skipped): by distance, or with `cohort` (each row's cohort mean) by cohort score.
    fn rank(
        &self,
        candidates: impl Iterator<Item = (usize, f32)>,
        k: usize,
        cohort: Option<&[f32]>,
    ) -> Vec<Match> {
        // Lower is better: minus the dot product, or the cohort score.
        let key = |i: usize, dot: f32| match cohort {
            Some(c) => cohort_score(dist(dot), c[i]),
            None => -dot,
        };
        let mut best: Vec<Option<(f32, f32, usize)>> = vec![None; self.names.len()];
        for (i, d) in candidates {
            let Some(&label) = self.labels.get(i).filter(|&&l| l != DEAD) else {
                continue;
            };
            let kd = key(i, d);
            let slot = &mut best[label];
            if slot.is_none_or(|(bk, _, _)| kd < bk) {
                *slot = Some((kd, d, i));
            }
        }
        let mut m: Vec<(f32, f32, usize, usize)> = best
            .iter()
            .enumerate()
            .filter_map(|(l, b)| b.map(|(kd, d, i)| (kd, d, l, i)))
            .collect();
        m.sort_by(|a, b| a.0.total_cmp(&b.0));
        m.into_iter()
            .take(k)
            .map(|(kd, d, l, i)| Match {
                identity: self.names[l].clone(),
                distance: dist(d),
                source: self.sources[i].clone(),
                cohort_score: cohort.map(|_| kd),
            })
            .collect()
    }

    /// Each row's cohort mean: its mean distance to its [`facenet::eval::cohort::COHORT_K`] nearest rows of other
    /// identities (0 for dead rows). Listed at the first call (every pair of rows, or through
    /// the attached graph), then kept up to date by each change.
    pub fn cohort_means(&self) -> &[f32] {
        self.cohort
            .get_or_init(|| {
                let rows = Rows {
                    data: &self.data,
                    dim: self.dim,
                    labels: &self.labels,
                };
                Neighbours::build(&rows, self.ann.as_deref())
            })
            .means()
    }

    /// Identities with a face searched.
    pub fn identities(&self) -> usize {
        self.rows_of.iter().filter(|r| !r.is_empty()).count()
    }

    /// The best `k` identities by cohort score ([`facenet::eval::cohort`]): each face's
    /// distance less its mean distance to the [`facenet::eval::cohort::COHORT_K`] nearest faces of other identities.
    /// Exact, or among the nearest faces of the attached graph (several times `k`, at least
    /// 128: the cohort means differ by tenths, so the best score lies among the nearest).
    pub fn search_cohort(&self, q: &[f32], k: usize) -> Result<Vec<Match>> {
        self.check_dim("the query", q.len())?;
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let means = self.cohort_means();
        if let Some(ann) = &self.ann {
            let faces = ann.nearest(q, (16 * k).max(128))?;
            return Ok(self.rank(faces.into_iter(), k, Some(means)));
        }
        let dots = self.dots(q);
        Ok(self.rank(dots.into_iter().enumerate(), k, Some(means)))
    }
}

/// The normalized mean of one identity's unit embeddings, and the source a match on it
/// reports.
fn centroid(faces: &[&FaceRecord]) -> Result<(Vec<f32>, String)> {
    let dim = faces.first().map_or(0, |f| f.embedding.len());
    let mut sum = vec![0.0f32; dim];
    for f in faces {
        if f.embedding.len() != dim {
            return Err(GalleryError::Invalid(format!(
                "{}: embedding has {} values, the identity's others {dim}",
                f.source,
                f.embedding.len(),
            )));
        }
        sum.iter_mut().zip(&f.embedding).for_each(|(a, b)| *a += b);
    }
    Ok((
        facenet::embed::l2_normalize(&sum),
        format!("centroid of {} face(s)", faces.len()),
    ))
}

/// FNV-1a over the face ids: a cheap key that changes when any face is added or removed.
fn fnv1a(ids: &[i64]) -> String {
    let mut h = 0xcbf29ce484222325u64;
    for id in ids {
        for b in id.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    format!("{h:016x}")
}

/// L2 distance of unit vectors from their dot product.
fn dist(dot: f32) -> f32 {
    (2.0 - 2.0 * dot).max(0.0).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(angle_deg: f32) -> Vec<f32> {
        let a = angle_deg.to_radians();
        vec![a.cos(), a.sin()]
    }

    /// The cohort search by hand: a crowded entry is discounted against an isolated one at
    /// the same distance, and the kept cohort lists follow each change of the gallery: they
    /// agree with lists made afresh.
    #[test]
    fn cohort_search_discounts_crowded_entries_and_follows_changes() {
        let mut idx = SearchIndex::default();
        // Ada among three others within 30 degrees; Eve alone at 180.
        for (name, deg) in [
            ("ada", 0.0),
            ("b", 20.0),
            ("c", 25.0),
            ("d", 30.0),
            ("eve", 180.0),
        ] {
            idx.push(name, &unit(deg), name).unwrap();
        }
        let chord = |deg: f32| 2.0 * (deg / 2.0).to_radians().sin();
        // The probe at 95 degrees is nearer to d (65) than to Eve (85).
        let means = idx.cohort_means().to_vec();
        // COHORT_K is 5 and Ada has four others: all four are her cohort.
        let ada_mean = (chord(20.0) + chord(25.0) + chord(30.0) + chord(180.0)) / 4.0;
        assert!(
            (means[0] - ada_mean).abs() < 1e-5,
            "{} vs {ada_mean}",
            means[0]
        );
        let m = idx.search_cohort(&unit(95.0), 2).unwrap();
        // By distance d (65 degrees) is first; by cohort score Eve's isolation wins.
        assert_eq!(idx.search(&unit(95.0), 1).unwrap()[0].identity, "d");
        assert_eq!(m[0].identity, "eve");
        assert!((m[0].distance - chord(85.0)).abs() < 1e-5);
        assert!((m[0].cohort_score.unwrap() - (chord(85.0) - means[4])).abs() < 1e-5);
        assert!(m[0].cohort_score < m[1].cohort_score);
        // A newcomer next to Eve makes her crowded: her mean falls.
        idx.replace_identity(
            "fay",
            &[FaceRecord {
                id: 9,
                identity: "fay".into(),
                embedding: unit(175.0),
                source: "f".into(),
                bbox: None,
                created: 0,
            }],
        )
        .unwrap();
        let after = idx.cohort_means().to_vec();
        assert!(after[4] < means[4] - 0.3, "{} -> {}", means[4], after[4]);
        let afresh = |idx: &SearchIndex| {
            let mut copy = idx.clone();
            copy.cohort = std::sync::OnceLock::new();
            copy.cohort_means().to_vec()
        };
        assert_eq!(after, afresh(&idx));
        // Removing her again restores the old means (her row stays, dead, at 0).
        idx.replace_identity("fay", &[]).unwrap();
        assert!((idx.cohort_means()[4] - means[4]).abs() < 1e-6);
        assert_eq!(idx.cohort_means(), afresh(&idx).as_slice());
        assert_eq!(idx.identities(), 5);
        assert!(idx.search(&unit(0.0), 1).unwrap()[0].cohort_score.is_none());
    }

    #[test]
    fn ranks_identities_by_their_best_face() {
        let mut idx = SearchIndex::default();
        idx.push("ada", &unit(0.0), "a1").unwrap();
        idx.push("ada", &unit(50.0), "a2").unwrap();
        idx.push("bob", &unit(30.0), "b1").unwrap();
        idx.push("cy", &unit(180.0), "c1").unwrap();
        // Query at 45 degrees: ada's a2 is 5 degrees away, bob 15, cy 135.
        let m = idx.search(&unit(45.0), 2).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].identity.as_str(), m[0].source.as_str()),
            ("ada", "a2")
        );
        assert_eq!(m[1].identity, "bob");
        // chord length of 5 degrees: 2 sin(2.5 deg).
        assert!((m[0].distance - 2.0 * 2.5f32.to_radians().sin()).abs() < 1e-5);
        let faces = idx.nearest_faces(&unit(45.0), 3).unwrap();
        assert_eq!(faces.iter().map(|f| f.0).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert!(
            SearchIndex::default()
                .search(&unit(0.0), 3)
                .unwrap()
                .is_empty()
        );
        // A query or face of another length is an error, not a wrong distance or a panic.
        let e = idx.search(&[1.0, 0.0, 0.0], 1).unwrap_err().to_string();
        assert!(e.contains("3 values") && e.contains('2'), "{e}");
        assert!(idx.push("dan", &[1.0], "d1").is_err());
        assert_eq!(idx.len(), 4);
    }

    /// With a graph attached, the cohort lists are made through it: the same means as by
    /// comparing every pair, on nearly every face. The graph is built on one thread, so that
    /// it is the same each run: inserted from two threads at once it differs from run to
    /// run, and 1-7 % of these faces then missed a neighbour (12 runs of 25).
    #[test]
    fn cohort_lists_through_the_graph_agree_with_every_pair() {
        let g = crate::synthetic::face_like(400, 4, 0, 32, 5);
        let mut idx = SearchIndex::default();
        for (i, row) in g.gallery.chunks_exact(32).enumerate() {
            idx.push(&format!("p{}", g.labels[i]), row, &format!("f{i}"))
                .unwrap();
        }
        let exact = idx.cohort_means().to_vec();
        let mut graphed = idx.clone();
        graphed.cohort = std::sync::OnceLock::new();
        graphed.build_ann(AnnConfig::default(), 1).unwrap();
        let through = graphed.cohort_means();
        assert_eq!(through.len(), exact.len());
        let same = exact
            .iter()
            .zip(through)
            .filter(|(a, b)| (*a - *b).abs() < 1e-4)
            .count();
        assert!(same * 100 >= exact.len() * 99, "{same} of {}", exact.len());
        assert!(exact.iter().all(|&m| m > 0.5), "other people lie apart");
    }

    /// With a graph attached, replacing an identity updates the graph too: its old rows are
    /// never returned, its new ones are found, through the graph as exactly.
    #[test]
    fn replacing_an_identity_updates_the_graph() {
        let g = crate::synthetic::face_like(300, 4, 0, 16, 7);
        let faces: Vec<FaceRecord> = (0..g.labels.len())
            .map(|i| FaceRecord {
                id: i as i64,
                identity: format!("p{}", g.labels[i]),
                embedding: g.gallery[i * 16..(i + 1) * 16].to_vec(),
                source: format!("f{i}"),
                bbox: None,
                created: 0,
            })
            .collect();
        let mut idx = SearchIndex::new(&faces).unwrap();
        idx.build_ann(AnnConfig::default(), 2).unwrap();
        // p0 takes p1's faces' places (the same vectors, new sources); p1 leaves.
        let moved: Vec<FaceRecord> = faces
            .iter()
            .filter(|f| f.identity == "p1")
            .map(|f| FaceRecord {
                identity: "p0".into(),
                source: format!("moved {}", f.source),
                ..f.clone()
            })
            .collect();
        idx.replace_identity("p1", &[]).unwrap();
        idx.replace_identity("p0", &moved).unwrap();
        assert_eq!(idx.len(), faces.len() - 4);
        for f in &moved {
            let m = idx.search(&f.embedding, 3).unwrap();
            // The graph's distances are computed in its own arithmetic: within 1e-3 of 0.
            assert_eq!(m[0].identity, "p0");
            assert!(m[0].distance < 1e-3, "{:?}", m[0]);
            assert!(m[0].source.starts_with("moved"), "{:?}", m[0]);
            assert!(m.iter().all(|m| m.identity != "p1"));
            let exact = &idx.search_exact(&f.embedding, 1).unwrap()[0];
            assert_eq!(
                (&exact.identity, &exact.source),
                (&m[0].identity, &m[0].source)
            );
        }
    }

    /// More concurrent searches of one graph than usearch has contexts for wait for a place
    /// instead of failing (a service's 16 workers once got "Reserve capacity ahead of
    /// searches!" from a graph built on 2 threads).
    #[test]
    fn a_shared_graph_takes_many_concurrent_searches() {
        let g = crate::synthetic::face_like(500, 2, 0, 16, 3);
        let mut idx = SearchIndex::default();
        for i in 0..g.labels.len() {
            idx.push(
                &format!("p{}", g.labels[i]),
                &g.gallery[i * 16..(i + 1) * 16],
                "f",
            )
            .unwrap();
        }
        idx.build_ann(AnnConfig::default(), 2).unwrap();
        // The answers of one caller at a time (the graph is approximate: a face's own identity
        // is not always first); concurrent callers must get the same, and no error.
        let query = |row: usize| &g.gallery[row * 16..(row + 1) * 16];
        let alone: Vec<Vec<Match>> = (0..g.labels.len())
            .map(|row| idx.search(query(row), 1).unwrap())
            .collect();
        let threads = 2 * crate::ann::ANN_CONTEXTS + 8;
        std::thread::scope(|s| {
            for t in 0..threads {
                let (idx, alone, query) = (&idx, &alone, &query);
                s.spawn(move || {
                    for j in 0..20 {
                        let row = (t * 20 + j) % alone.len();
                        assert_eq!(idx.search(query(row), 1).unwrap(), alone[row], "row {row}");
                    }
                });
            }
        });
    }
}
