//! Synthetic face-like embeddings for benchmarks and tests of search.
//!
//! Uniform random unit vectors are the wrong model for a gallery: in 128-d every pair is at
//! nearly the same distance (~1.41), which no real gallery looks like and which defeats any
//! graph index. Real FaceNet galleries hold identities: faces of one person lie within ~0.7
//! (L2 between unit vectors; LFW same-person pairs average 0.75 with the Keras model), other
//! people's near 1.4. This generator draws identity centres uniformly on the sphere and
//! faces around them with that spread.

/// A xorshift generator: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

/// A gallery of `identities x per_identity` unit vectors of `dim` values (row-major) and
/// `queries` further faces of randomly chosen identities, with each query's identity.
pub struct FaceLike {
    /// `n x dim` gallery rows.
    pub gallery: Vec<f32>,
    /// Identity of each gallery row.
    pub labels: Vec<usize>,
    /// `queries x dim` query rows.
    pub queries: Vec<f32>,
    /// Identity of each query.
    pub query_labels: Vec<usize>,
}

/// Draws a face-like gallery (see the module documentation).
pub fn face_like(
    identities: usize,
    per_identity: usize,
    queries: usize,
    dim: usize,
    seed: u64,
) -> FaceLike {
    let mut rng = Rng(seed.max(1) ^ 0x9e37_79b9_7f4a_7c15);
    // Uniform noise of width w has variance w^2 / 12 per coordinate; w^2 d / 12 = 0.33 puts
    // two faces of one identity ~0.7 apart after normalisation.
    let width = (0.33 * 12.0 / dim as f32).sqrt();
    let centres: Vec<Vec<f32>> = (0..identities)
        .map(|_| {
            let mut c: Vec<f32> = (0..dim).map(|_| rng.uniform()).collect();
            normalize(&mut c);
            c
        })
        .collect();
    let face = |rng: &mut Rng, id: usize| {
        let mut v: Vec<f32> = centres[id]
            .iter()
            .map(|c| c + width * rng.uniform())
            .collect();
        normalize(&mut v);
        v
    };
    let mut out = FaceLike {
        gallery: Vec::with_capacity(identities * per_identity * dim),
        labels: Vec::with_capacity(identities * per_identity),
        queries: Vec::with_capacity(queries * dim),
        query_labels: Vec::with_capacity(queries),
    };
    for id in 0..identities {
        for _ in 0..per_identity {
            out.gallery.extend(face(&mut rng, id));
            out.labels.push(id);
        }
    }
    for _ in 0..queries {
        let id = ((rng.uniform() + 0.5) * identities as f32) as usize % identities.max(1);
        out.queries.extend(face(&mut rng, id));
        out.query_labels.push(id);
    }
    out
}

/// Adds `faces` synthetic face-like faces (5 per identity, named `synthetic-N`,
/// [`face_like`]) under `model` to `store`, in transactions of
/// 50,000 faces.
pub fn add_synthetic(
    store: &dyn crate::GalleryStore,
    model: &crate::ModelInfo,
    faces: usize,
) -> Result<(), crate::GalleryError> {
    const PER: usize = 5;
    const CHUNK: usize = 10_000;
    let identities = faces.div_ceil(PER);
    for first in (0..identities).step_by(CHUNK) {
        let n = CHUNK.min(identities - first);
        let g = face_like(n, PER, 0, model.dim, first as u64 + 1);
        let mut batch = crate::ImportBatch {
            model: Some(model.clone()),
            identities: Vec::with_capacity(n),
        };
        for id in 0..n {
            let faces: Vec<crate::NewFace> = (0..PER)
                .map(|j| {
                    let row = id * PER + j;
                    crate::NewFace {
                        embedding: g.gallery[row * model.dim..(row + 1) * model.dim].to_vec(),
                        source: format!("synthetic {row}"),
                        bbox: None,
                    }
                })
                .collect();
            batch
                .identities
                .push((format!("synthetic-{}", first + id), faces, vec![0; PER]));
        }
        store.import(&batch)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_faces_fill_whole_identities() {
        use crate::GalleryStore;
        let store = crate::SqliteGallery::in_memory().unwrap();
        let model = crate::ModelInfo {
            fingerprint: "f".into(),
            dim: 8,
        };
        add_synthetic(&store, &model, 23).unwrap();
        // 23 faces round up to 5 identities of 5.
        let ids = store.identities().unwrap();
        assert_eq!(ids.len(), 5);
        assert!(
            ids.iter()
                .all(|(n, k)| n.starts_with("synthetic-") && *k == 5)
        );
        assert_eq!(store.model().unwrap(), Some(model));
    }

    #[test]
    fn distances_look_like_face_embeddings() {
        let g = face_like(50, 4, 0, 128, 1);
        let row = |i: usize| &g.gallery[i * 128..(i + 1) * 128];
        let d = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f32>()
                .sqrt()
        };
        let (mut same, mut ns, mut other, mut no) = (0.0, 0, 0.0, 0);
        for i in 0..200 {
            for j in i + 1..200 {
                if g.labels[i] == g.labels[j] {
                    same += d(row(i), row(j));
                    ns += 1;
                } else {
                    other += d(row(i), row(j));
                    no += 1;
                }
            }
        }
        let (same, other) = (same / ns as f32, other / no as f32);
        assert!((0.6..0.8).contains(&same), "same-identity mean {same}");
        assert!((1.35..1.45).contains(&other), "other-identity mean {other}");
    }
}

/// What [`search_bench`] measured on one gallery size.
#[derive(Debug, Clone, Copy)]
pub struct SearchBench {
    /// Exact search, one core, per query.
    pub exact_ms: f64,
    /// HNSW search per query, graph build time and recall@1 of the nearest face against
    /// exact search (when asked for).
    pub hnsw: Option<(f64, f64, f64)>,
    /// The cohort score on the exact index (galleries up to [`COHORT_BENCH_MAX`] faces):
    /// seconds to list every face's nearest faces of other identities (all cores), search per
    /// query, and milliseconds to bring the lists up to date after one identity's face is
    /// replaced.
    pub cohort: Option<(f64, f64, f64)>,
}

/// The largest gallery [`search_bench`] times the cohort score on.
pub const COHORT_BENCH_MAX: usize = 20_000;

/// Times exact search (one core) over `n` face-like unit vectors (10 per identity, see
/// [`face_like`]) with `queries` queries, and with `hnsw` also the HNSW graph built on
/// `threads` threads.
pub fn search_bench(
    n: usize,
    queries: usize,
    hnsw: bool,
    threads: usize,
) -> crate::Result<SearchBench> {
    use std::time::Instant;
    let dim = 128;
    let g = face_like(n.div_ceil(10), 10, queries.max(1), dim, 11);
    let mut idx = crate::SearchIndex::default();
    for (i, row) in g.gallery.chunks_exact(dim).take(n).enumerate() {
        idx.push(&format!("id{}", g.labels[i]), row, &i.to_string())?;
    }
    let qs: Vec<&[f32]> = g.queries.chunks_exact(dim).collect();
    let per_query = |t: Instant| t.elapsed().as_secs_f64() * 1000.0 / qs.len() as f64;
    let t = Instant::now();
    let exact = qs
        .iter()
        .map(|q| idx.search_exact(q, 5))
        .collect::<crate::Result<Vec<_>>>()?;
    let exact_ms = per_query(t);
    let cohort = match n <= COHORT_BENCH_MAX {
        true => {
            let t = Instant::now();
            idx.cohort_means();
            let build_s = t.elapsed().as_secs_f64();
            let t = Instant::now();
            for q in &qs {
                idx.search_cohort(q, 5)?;
            }
            let ms = per_query(t);
            let face = crate::FaceRecord {
                id: -1,
                identity: "id0".into(),
                embedding: qs[0].to_vec(),
                source: "replaced".into(),
                bbox: None,
                created: 0,
            };
            let t = Instant::now();
            idx.replace_identity("id0", &[face])?;
            idx.cohort_means();
            Some((build_s, ms, t.elapsed().as_secs_f64() * 1000.0))
        }
        false => None,
    };
    if !hnsw {
        return Ok(SearchBench {
            exact_ms,
            hnsw: None,
            cohort,
        });
    }
    let t = Instant::now();
    idx.build_ann(crate::AnnConfig::default(), threads)?;
    let build_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let approx = qs
        .iter()
        .map(|q| idx.search(q, 5))
        .collect::<crate::Result<Vec<_>>>()?;
    let ann_ms = per_query(t);
    let hits = exact
        .iter()
        .zip(&approx)
        .filter(|(e, a)| e[0].source == a[0].source)
        .count();
    Ok(SearchBench {
        exact_ms,
        hnsw: Some((ann_ms, build_s, hits as f64 / qs.len() as f64)),
        cohort,
    })
}

/// What [`store_search_bench`] measured on one store and gallery size; per rule, in the order
/// centroid, nearest sample.
#[derive(Debug, Clone, Copy)]
pub struct StoreSearchBench {
    /// Faces stored.
    pub faces: usize,
    /// Seconds to store them (transactions of 500 identities).
    pub load_s: f64,
    /// Exact search in the store, per query.
    pub exact_ms: [f64; 2],
    /// Search by the cohort score in the store without an index, per query.
    pub cohort_ms: [f64; 2],
    /// The share of queries whose best identity and cohort score (within 1e-4) under the
    /// store's cohort search are those of the same gallery ranked whole in memory
    /// ([`crate::SearchIndex::search_cohort`]).
    pub cohort_agree: [f64; 2],
    /// With an index.
    pub hnsw: Option<StoreHnswBench>,
}

impl StoreSearchBench {
    /// The `bench search --store` lines: per rule, exact search by distance and by the cohort
    /// score, then, with an index (`ef_search` as it was built with), the same through it.
    pub fn lines(&self, ef_search: u32) -> Vec<String> {
        let n = self.faces;
        let mut out = Vec::new();
        for (i, rule) in ["centroid", "nearest"].iter().enumerate() {
            let at = format!("search n={n} dim=128 store=postgres rule={rule}");
            out.push(format!(
                "{at} kind=exact ms_per_query={:.3} load_s={:.1}",
                self.exact_ms[i], self.load_s
            ));
            out.push(format!(
                "{at} kind=exact-cohort ms_per_query={:.3} same_as_in_memory={:.4}",
                self.cohort_ms[i], self.cohort_agree[i]
            ));
            if let Some(h) = &self.hnsw {
                out.push(format!(
                    "{at} kind=hnsw ms_per_query={:.3} build_s={:.1} ef_search={ef_search} \
                     recall_at_1={:.4} speedup={:.1}",
                    h.ms[i],
                    h.build_s,
                    h.recall[i],
                    self.exact_ms[i] / h.ms[i]
                ));
                out.push(format!(
                    "{at} kind=hnsw-cohort ms_per_query={:.3} ef_search={ef_search} \
                     recall_at_1={:.4}",
                    h.cohort_ms[i], h.cohort_recall[i]
                ));
            }
        }
        out
    }
}

/// The index's part of a [`StoreSearchBench`].
#[derive(Debug, Clone, Copy)]
pub struct StoreHnswBench {
    /// Seconds to build the index.
    pub build_s: f64,
    /// Search through it, per query.
    pub ms: [f64; 2],
    /// Recall@1 against exact search (the same identity under the centroid rule, the same
    /// face under nearest-sample).
    pub recall: [f64; 2],
    /// Search by the cohort score through it, per query.
    pub cohort_ms: [f64; 2],
    /// The share of queries whose best identity by the cohort score is the exact one's.
    pub cohort_recall: [f64; 2],
}

/// Times search inside a store that searches itself (a database): stores `n` face-like
/// unit vectors (10 per identity) into `store` (an empty gallery), times exact search under
/// both rules, by distance and by the cohort score, over `queries` queries, then, with
/// `hnsw`, builds the store's index and times search through it, with recall@1 against the
/// exact answers. `progress` hears each step.
pub fn store_search_bench(
    store: &dyn crate::GalleryStore,
    n: usize,
    queries: usize,
    hnsw: Option<crate::HnswParams>,
    progress: &dyn Fn(&str),
) -> crate::Result<StoreSearchBench> {
    use crate::{GalleryRule, ImportBatch, Match, ModelInfo, NewFace, Scoring};
    use std::time::Instant;
    let dim = 128;
    let g = face_like(n.div_ceil(10), 10, queries.max(1), dim, 11);
    let model = ModelInfo {
        fingerprint: format!("{:064x}", 0x5e17_u64),
        dim,
    };
    let t = Instant::now();
    let rows: Vec<&[f32]> = g.gallery.chunks_exact(dim).take(n).collect();
    let mut start = 0;
    while start < rows.len() {
        let mut batch = ImportBatch {
            model: Some(model.clone()),
            identities: Vec::new(),
        };
        let mut i = start;
        while i < rows.len() && batch.identities.len() < 500 {
            let label = g.labels[i];
            let mut faces = Vec::new();
            while i < rows.len() && g.labels[i] == label {
                faces.push(NewFace {
                    embedding: rows[i].to_vec(),
                    source: i.to_string(),
                    bbox: None,
                });
                i += 1;
            }
            let times = vec![0; faces.len()];
            batch.identities.push((format!("id{label}"), faces, times));
        }
        store.import(&batch)?;
        start = i;
        progress(&format!("stored {start}/{n} faces"));
    }
    let load_s = t.elapsed().as_secs_f64();
    let qs: Vec<&[f32]> = g.queries.chunks_exact(dim).collect();
    let rules = [GalleryRule::Centroid, GalleryRule::NearestSample];
    let run = |rule, scoring| -> crate::Result<(f64, Vec<Match>)> {
        let t = Instant::now();
        let mut top = Vec::with_capacity(qs.len());
        for q in &qs {
            let m = store.search(q, 5, rule, scoring)?.ok_or_else(|| {
                crate::GalleryError::Invalid(format!(
                    "{}: this store does not search itself",
                    store.location()
                ))
            })?;
            top.extend(m.into_iter().next());
        }
        Ok((t.elapsed().as_secs_f64() * 1000.0 / qs.len() as f64, top))
    };
    let share = |a: &[Match], b: &[Match], same: &dyn Fn(&Match, &Match) -> bool| {
        a.iter().zip(b).filter(|(a, b)| same(a, b)).count() as f64 / qs.len() as f64
    };
    let faces = store.faces(None)?;
    let (mut exact_ms, mut cohort_ms, mut cohort_agree) = ([0.0; 2], [0.0; 2], [0.0; 2]);
    let (mut exact, mut cohort) = (Vec::new(), Vec::new());
    for (i, rule) in rules.into_iter().enumerate() {
        let (ms, top) = run(rule, Scoring::Distance)?;
        exact_ms[i] = ms;
        exact.push(top);
        progress(&format!("exact search ({rule:?}) {ms:.2} ms per query"));
        let (ms, top) = run(rule, Scoring::Cohort)?;
        cohort_ms[i] = ms;
        let index = crate::SearchIndex::with_rule(&faces, rule)?;
        let whole = qs
            .iter()
            .map(|q| Ok(index.search_cohort(q, 1)?.remove(0)))
            .collect::<crate::Result<Vec<_>>>()?;
        cohort_agree[i] = share(&top, &whole, &|a, b| {
            let (sa, sb) = (
                a.cohort_score.unwrap_or(9.0),
                b.cohort_score.unwrap_or(-9.0),
            );
            a.identity == b.identity && (sa - sb).abs() < 1e-4
        });
        cohort.push(top);
        progress(&format!("cohort search ({rule:?}) {ms:.2} ms per query"));
    }
    let hnsw = match hnsw {
        None => None,
        Some(params) => {
            let t = Instant::now();
            store.set_index(Some(params))?;
            let build_s = t.elapsed().as_secs_f64();
            progress(&format!("HNSW index built in {build_s:.1} s"));
            let mut h = StoreHnswBench {
                build_s,
                ms: [0.0; 2],
                recall: [0.0; 2],
                cohort_ms: [0.0; 2],
                cohort_recall: [0.0; 2],
            };
            for (i, rule) in rules.into_iter().enumerate() {
                let (t, top) = run(rule, Scoring::Distance)?;
                h.ms[i] = t;
                h.recall[i] = share(&exact[i], &top, &|e, a| {
                    e.identity == a.identity && e.source == a.source
                });
                let (t, top) = run(rule, Scoring::Cohort)?;
                h.cohort_ms[i] = t;
                h.cohort_recall[i] = share(&cohort[i], &top, &|e, a| e.identity == a.identity);
            }
            Some(h)
        }
    };
    Ok(StoreSearchBench {
        faces: n,
        load_s,
        exact_ms,
        cohort_ms,
        cohort_agree,
        hnsw,
    })
}
