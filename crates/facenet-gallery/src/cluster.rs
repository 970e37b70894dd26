//! Clustering faces by identity without labels: Chinese whispers (Biemann 2006; dlib's
//! `chinese_whispers`, the method face_recognition's docs recommend) and DBSCAN.
//! Both link two faces when their L2 distance (unit embeddings) is below a threshold.

/// A clustering method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Chinese whispers (graph label propagation; no cluster count needed).
    #[default]
    ChineseWhispers,
    /// DBSCAN (min 2 points).
    Dbscan,
}

impl Method {
    /// Labels of `points`, linking faces closer than `threshold` (L2 between unit vectors).
    pub fn run(self, points: &[Vec<f32>], threshold: f32) -> Vec<usize> {
        match self {
            Self::ChineseWhispers => chinese_whispers(points, threshold, 100, 1),
            Self::Dbscan => dbscan(points, threshold, 2),
        }
    }
}

/// Chinese whispers on the graph "distance < threshold": each node repeatedly takes the label
/// most common among its neighbours (weighted by similarity), in a seeded random order.
/// Returns a cluster label per point (0-based, clusters numbered by first appearance).
pub fn chinese_whispers(
    points: &[Vec<f32>],
    threshold: f32,
    iterations: usize,
    seed: u64,
) -> Vec<usize> {
    let n = points.len();
    let adj = graph(points, threshold);
    let mut label: Vec<usize> = (0..n).collect();
    let mut rng = seed.max(1);
    let mut order: Vec<usize> = (0..n).collect();
    for _ in 0..iterations {
        // Fisher-Yates with xorshift64: a seeded, dependency-free shuffle.
        for i in (1..n).rev() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            order.swap(i, (rng % (i as u64 + 1)) as usize);
        }
        let mut changed = false;
        for &i in &order {
            if adj[i].is_empty() {
                continue;
            }
            let mut votes: Vec<(usize, f32)> = Vec::new();
            for &(j, w) in &adj[i] {
                match votes.iter_mut().find(|(l, _)| *l == label[j]) {
                    Some(v) => v.1 += w,
                    None => votes.push((label[j], w)),
                }
            }
            let best = votes
                .iter()
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
                .map(|v| v.0)
                .unwrap_or(label[i]);
            if best != label[i] {
                label[i] = best;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    renumber(&label)
}

/// DBSCAN with `eps = threshold`; points in no dense region get their own cluster each.
pub fn dbscan(points: &[Vec<f32>], threshold: f32, min_points: usize) -> Vec<usize> {
    let n = points.len();
    let adj = graph(points, threshold);
    let mut label: Vec<Option<usize>> = vec![None; n];
    let mut next = 0;
    for i in 0..n {
        if label[i].is_some() || adj[i].len() + 1 < min_points {
            continue;
        }
        label[i] = Some(next);
        let mut stack: Vec<usize> = adj[i].iter().map(|&(j, _)| j).collect();
        while let Some(j) = stack.pop() {
            if label[j].is_some() {
                continue;
            }
            label[j] = Some(next);
            if adj[j].len() + 1 >= min_points {
                stack.extend(adj[j].iter().map(|&(k, _)| k));
            }
        }
        next += 1;
    }
    let raw: Vec<usize> = label
        .iter()
        .map(|l| {
            l.unwrap_or_else(|| {
                next += 1;
                next - 1
            })
        })
        .collect();
    renumber(&raw)
}

/// The similarity graph: for each point, the others closer than `threshold`, weighted by
/// inverse distance (in increasing index order).
fn graph(points: &[Vec<f32>], threshold: f32) -> Vec<Vec<(usize, f32)>> {
    let all: Vec<usize> = (0..points.len()).collect();
    neighbours(points, &all, threshold)
        .into_iter()
        .map(|near| {
            near.into_iter()
                .map(|(j, d)| (j, 1.0 / (1e-6 + d)))
                .collect()
        })
        .collect()
}

/// Squared L2 between two vectors, in 8 independent lanes (the compiler vectorizes it).
pub fn distance2(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            let d = x[k] - y[k];
            acc[k] += d * d;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += (x - y) * (x - y);
    }
    s
}

/// For each of `queries` (indices into `points`), the other points within `threshold`, with
/// their distance; spread over the machine's cores.
pub fn neighbours(
    points: &[Vec<f32>],
    queries: &[usize],
    threshold: f32,
) -> Vec<Vec<(usize, f32)>> {
    let t2 = threshold * threshold;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(queries.len().max(1));
    let chunk = queries.len().div_ceil(threads).max(1);
    let mut out = Vec::with_capacity(queries.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = queries
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|&q| {
                            let p = &points[q];
                            points
                                .iter()
                                .enumerate()
                                .filter(|&(j, _)| j != q)
                                .filter_map(|(j, o)| {
                                    let d2 = distance2(p, o);
                                    (d2 < t2).then(|| (j, d2.max(0.0).sqrt()))
                                })
                                .collect::<Vec<_>>()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            out.extend(h.join().expect("a neighbour search thread panicked"));
        }
    });
    out
}

fn renumber(labels: &[usize]) -> Vec<usize> {
    let mut map: Vec<(usize, usize)> = Vec::new();
    labels
        .iter()
        .map(|&l| match map.iter().find(|(a, _)| *a == l) {
            Some(&(_, b)) => b,
            None => {
                map.push((l, map.len()));
                map.len() - 1
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs() -> Vec<Vec<f32>> {
        // Three tight groups far apart, and one outlier.
        vec![
            vec![0.0, 0.0],
            vec![0.1, 0.0],
            vec![0.0, 0.1],
            vec![5.0, 5.0],
            vec![5.1, 5.0],
            vec![9.0, 0.0],
            vec![9.0, 0.1],
            vec![20.0, 20.0],
        ]
    }

    #[test]
    fn chinese_whispers_finds_the_groups() {
        let l = chinese_whispers(&blobs(), 0.5, 20, 7);
        assert_eq!(l, vec![0, 0, 0, 1, 1, 2, 2, 3]);
    }

    #[test]
    fn dbscan_finds_the_groups_and_isolates_noise() {
        let l = dbscan(&blobs(), 0.5, 2);
        assert_eq!(l, vec![0, 0, 0, 1, 1, 2, 2, 3]);
        // With min_points 3 only the first group is dense; the rest are singletons.
        let l = dbscan(&blobs(), 0.5, 3);
        assert_eq!(l[0], l[2]);
        assert_ne!(l[3], l[4]);
    }
}
