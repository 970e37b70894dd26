//! A 2-D picture of an embedding space: the first two principal components, and how well
//! identities separate.
//!
//! ```text
//! facenet project --images lfw-aligned/DevTest --people 10 --out after.png
//! ```

/// The first two principal components of the rows (power iteration with deflation on the
/// covariance; 128 x 128 at most, so no linear-algebra crate is needed for it).
pub fn pca2(rows: &[Vec<f32>]) -> Vec<(f64, f64)> {
    let d = rows[0].len();
    let n = rows.len() as f64;
    let mean: Vec<f64> = (0..d)
        .map(|j| rows.iter().map(|r| r[j] as f64).sum::<f64>() / n)
        .collect();
    let centred: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| r.iter().zip(&mean).map(|(x, m)| *x as f64 - m).collect())
        .collect();
    let mut cov = vec![0.0f64; d * d];
    for r in &centred {
        for i in 0..d {
            for j in 0..d {
                cov[i * d + j] += r[i] * r[j];
            }
        }
    }
    let mut comps: Vec<Vec<f64>> = Vec::new();
    for c in 0..2 {
        let mut v: Vec<f64> = (0..d)
            .map(|i| 1.0 + ((i * 7 + c * 13) % 5) as f64)
            .collect();
        for _ in 0..500 {
            let mut w: Vec<f64> = (0..d)
                .map(|i| (0..d).map(|j| cov[i * d + j] * v[j]).sum())
                .collect();
            for p in &comps {
                let dot: f64 = w.iter().zip(p).map(|(a, b)| a * b).sum();
                w.iter_mut().zip(p).for_each(|(a, b)| *a -= dot * b);
            }
            let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-30);
            v = w.into_iter().map(|x| x / norm).collect();
        }
        comps.push(v);
    }
    centred
        .iter()
        .map(|r| {
            let p = |c: &Vec<f64>| r.iter().zip(c).map(|(a, b)| a * b).sum::<f64>();
            (p(&comps[0]), p(&comps[1]))
        })
        .collect()
}

/// Mean distance of a face to its own person's centroid divided by the mean distance to the
/// nearest other centroid (in the full embedding space): below 1, people are separable.
pub fn separation(points: &[Vec<f32>], labels: &[usize]) -> f64 {
    let k = labels.iter().max().map_or(0, |m| m + 1);
    let d = points[0].len();
    let mut cent = vec![vec![0.0f64; d]; k];
    let mut count = vec![0usize; k];
    for (p, &l) in points.iter().zip(labels) {
        cent[l].iter_mut().zip(p).for_each(|(c, x)| *c += *x as f64);
        count[l] += 1;
    }
    for (c, n) in cent.iter_mut().zip(&count) {
        c.iter_mut().for_each(|x| *x /= *n as f64);
    }
    let dist = |p: &[f32], c: &[f64]| {
        p.iter()
            .zip(c)
            .map(|(a, b)| (*a as f64 - b).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let (mut own, mut other) = (0.0, 0.0);
    for (p, &l) in points.iter().zip(labels) {
        own += dist(p, &cent[l]);
        other += (0..k)
            .filter(|&j| j != l)
            .map(|j| dist(p, &cent[j]))
            .fold(f64::INFINITY, f64::min);
    }
    own / other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_finds_the_spread_axis() {
        // Points along (1, 1, 0) with small noise on z: the first component is that axis.
        let rows: Vec<Vec<f32>> = (0..20)
            .map(|i| {
                let t = i as f32 - 10.0;
                vec![t, t, 0.01 * (i % 3) as f32]
            })
            .collect();
        let xy = pca2(&rows);
        let spread0 = xy.iter().map(|p| p.0 * p.0).sum::<f64>();
        let spread1 = xy.iter().map(|p| p.1 * p.1).sum::<f64>();
        assert!(spread0 > 1e4 * spread1, "{spread0} vs {spread1}");
        // The projection preserves distances along the axis: t runs over -10..=9 (mean
        // -0.5), so the first point sits 9.5 * sqrt(2) from the centre.
        assert!(
            (xy[0].0.abs() - 9.5 * 2f64.sqrt()).abs() < 1e-3,
            "{:?}",
            xy[0]
        );
    }

    #[test]
    fn separation_is_small_for_tight_clusters() {
        let pts = vec![
            vec![1.0, 0.0],
            vec![0.99, 0.01],
            vec![0.0, 1.0],
            vec![0.01, 0.99],
        ];
        assert!(separation(&pts, &[0, 0, 1, 1]) < 0.05);
        assert!(separation(&pts, &[0, 1, 0, 1]) > 0.5);
    }
}
