//! Each gallery row's nearest rows of other identities, kept up to date as rows come and go:
//! what the cohort score ([`facenet::eval::cohort`]) subtracts from a distance.
//!
//! The lists are made once, at the first cohort search (every pair of rows, in tiles that
//! stay in cache, on all cores; through the HNSW graph where one is attached), and then
//! follow each change at the cost of one pass over the rows: a new row is offered to every
//! row of another identity, and a row whose list lost a removed row is listed again.

use facenet::eval::cohort::{
    COHORT_K, NO_OWNER, dot, list_mean as mean, nearest_others, offer, unit_distance as dist,
};
use rayon::prelude::*;

use crate::ann::AnnIndex;

/// The rows of a [`crate::SearchIndex`], as the lists read them.
pub(crate) struct Rows<'a> {
    /// `n x dim` unit embeddings.
    pub data: &'a [f32],
    pub dim: usize,
    /// Each row's identity label, [`NO_OWNER`] for a dead row.
    pub labels: &'a [usize],
}

impl Rows<'_> {
    fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.dim..(r + 1) * self.dim]
    }

    fn alive(&self, r: usize) -> bool {
        self.labels[r] != NO_OWNER
    }

    fn len(&self) -> usize {
        self.labels.len()
    }

    /// Row `r`'s nearest rows of other identities, by one pass over all rows.
    fn list(&self, r: usize) -> Vec<(f32, usize)> {
        let mut best = Vec::with_capacity(COHORT_K + 1);
        let q = self.row(r);
        for j in 0..self.len() {
            if self.alive(j) && self.labels[j] != self.labels[r] {
                offer(&mut best, (dist(dot(q, self.row(j))), j), COHORT_K);
            }
        }
        best
    }
}

/// Each row's nearest rows of other identities (distance, row; nearest first; at most
/// [`COHORT_K`]) and their mean.
#[derive(Debug, Clone, Default)]
pub(crate) struct Neighbours {
    lists: Vec<Vec<(f32, usize)>>,
    means: Vec<f32>,
}

impl Neighbours {
    /// Lists every live row: through `ann` where it is given, else by comparing every pair.
    pub fn build(rows: &Rows<'_>, ann: Option<&AnnIndex>) -> Self {
        let n = rows.len();
        let lists: Vec<Vec<(f32, usize)>> = match ann {
            Some(ann) => {
                // Each identity's live rows, counted once (a row must see past its own).
                let mut own: std::collections::HashMap<usize, usize> = Default::default();
                for r in (0..n).filter(|&r| rows.alive(r)) {
                    *own.entry(rows.labels[r]).or_default() += 1;
                }
                (0..n)
                    .into_par_iter()
                    .map(|r| match rows.alive(r) {
                        true => through_graph(rows, ann, r, own[&rows.labels[r]]),
                        false => Vec::new(),
                    })
                    .collect()
            }
            None => nearest_others(rows.data, rows.labels, rows.dim, COHORT_K),
        };
        let means = lists.iter().map(|l| mean(l)).collect();
        Self { lists, means }
    }

    /// Each row's mean distance to its listed rows (0 for none).
    pub fn means(&self) -> &[f32] {
        &self.means
    }

    /// Row `r` was added: it is listed, and offered to every live row of another identity.
    pub fn added(&mut self, rows: &Rows<'_>, r: usize) {
        self.lists.resize(rows.len(), Vec::new());
        self.means.resize(rows.len(), 0.0);
        if !rows.alive(r) {
            return;
        }
        let q = rows.row(r);
        for j in 0..rows.len() {
            if j == r || !rows.alive(j) || rows.labels[j] == rows.labels[r] {
                continue;
            }
            let d = dist(dot(q, rows.row(j)));
            let list = &mut self.lists[j];
            if list.len() < COHORT_K || d < list[list.len() - 1].0 {
                offer(list, (d, r), COHORT_K);
                self.means[j] = mean(list);
            }
        }
        self.lists[r] = rows.list(r);
        self.means[r] = mean(&self.lists[r]);
    }

    /// Rows `gone` were removed (already dead in `rows`): their lists are dropped, and every
    /// row that listed one of them is listed again.
    pub fn removed(&mut self, rows: &Rows<'_>, gone: &[usize]) {
        for &g in gone {
            if let Some(l) = self.lists.get_mut(g) {
                l.clear();
                self.means[g] = 0.0;
            }
        }
        let stale: Vec<usize> = (0..self.lists.len().min(rows.len()))
            .filter(|&r| rows.alive(r) && self.lists[r].iter().any(|(_, j)| gone.contains(j)))
            .collect();
        let fresh: Vec<(usize, Vec<(f32, usize)>)> =
            stale.par_iter().map(|&r| (r, rows.list(r))).collect();
        for (r, list) in fresh {
            self.means[r] = mean(&list);
            self.lists[r] = list;
        }
    }
}

/// Row `r`'s list from its nearest faces in the graph (enough to pass the `own` rows of its
/// identity); by a pass over all rows where the graph gives too few.
fn through_graph(rows: &Rows<'_>, ann: &AnnIndex, r: usize, own: usize) -> Vec<(f32, usize)> {
    let Ok(near) = ann.nearest(rows.row(r), COHORT_K + own + 8) else {
        return rows.list(r);
    };
    let mut list = Vec::with_capacity(COHORT_K + 1);
    for (j, dotp) in near {
        if j < rows.len() && rows.alive(j) && rows.labels[j] != rows.labels[r] {
            offer(&mut list, (dist(dotp), j), COHORT_K);
        }
    }
    if list.len() < COHORT_K {
        return rows.list(r);
    }
    list
}
