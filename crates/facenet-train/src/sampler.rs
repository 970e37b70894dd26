//! Deterministic sampling of people and images (P people x K images per round).

pub use facenet::rng::Rng;

/// Picks up to `people` classes having at least two images, and up to `per_person` images of
/// each (davidsandberg's `sample_people`, with a fixed number per person). Returns
/// `(class, image index)` pairs, grouped by class.
pub fn sample_people(
    images_per_class: &[usize],
    people: usize,
    per_person: usize,
    rng: &mut Rng,
) -> Vec<(usize, usize)> {
    let mut classes: Vec<usize> = (0..images_per_class.len())
        .filter(|&c| images_per_class[c] >= 2)
        .collect();
    rng.shuffle(&mut classes);
    let mut out = Vec::new();
    for &c in classes.iter().take(people) {
        let mut idx: Vec<usize> = (0..images_per_class[c]).collect();
        rng.shuffle(&mut idx);
        out.extend(idx.into_iter().take(per_person).map(|i| (c, i)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_deterministic_and_respects_counts() {
        let counts = [5, 1, 3, 8, 2];
        let a = sample_people(&counts, 3, 2, &mut Rng::new(42));
        let b = sample_people(&counts, 3, 2, &mut Rng::new(42));
        assert_eq!(a, b);
        assert_eq!(a.len(), 6);
        assert!(a.iter().all(|&(c, i)| c != 1 && i < counts[c]));
        let c = sample_people(&counts, 3, 2, &mut Rng::new(43));
        assert_ne!(a, c);
    }
}
