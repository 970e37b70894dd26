//! Grouping a library's faces into people, incrementally: a face joins the person enough of
//! whose faces are near it ([`PeopleRule::votes`]), or, short of the votes, the neighbouring
//! person whose centroid lies near it ([`PeopleRule::centroid`]); faces that belong to no one
//! found new people by Chinese whispers over the pairs closer than a stricter threshold
//! ([`PeopleRule::found`]), once [`PeopleRule::min_faces`] of them agree, and a new person
//! whose centroid lies near another person's merges with them ([`PeopleRule::merge`]). A face
//! joins only one person, so joining never merges two people; founding and merging are where
//! that could happen, hence their stricter thresholds and label propagation, which does not
//! chain two people through one stray pair as single-link DBSCAN does. The user's word wins:
//! faces they placed (`pinned`) never move, and a face never joins a person it was taken out
//! of (`rejects`).
//!
//! Everything here is a pure function of the embeddings and the current assignment, so the
//! store runs it inside one write transaction and the evaluation replays it on the same data.

use std::collections::{BTreeMap, HashMap, HashSet};

pub use crate::cluster::{distance2, neighbours};

/// When faces count as one person.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PeopleRule {
    /// A face joins a person through neighbours below this L2 distance (unit embeddings).
    pub threshold: f32,
    /// Faces found a new person through neighbours below this stricter distance: founding
    /// links faces transitively, so it is where two people could merge.
    pub found: f32,
    /// Faces (counting itself) a face needs within `found` to found a new person; a person is
    /// never formed from fewer.
    pub min_faces: usize,
    /// Neighbours a face needs among a person's faces to join them (or all of them, for a
    /// person with fewer faces).
    pub votes: usize,
    /// The quality a face needs to be grouped: poor faces (tiny, blurred, background) look
    /// alike whoever they are, and would otherwise form one "person" of strangers.
    pub min_quality: f32,
    /// A face without enough votes joins the person of two faces or more (among its
    /// neighbours' people) whose centroid, the normalized mean of their faces, lies below this
    /// distance: a mean of several faces is a steadier target than any one of them. 0 turns
    /// it off.
    #[serde(default)]
    pub centroid: f32,
    /// A person founded in this pass merges with the person (of two faces or more, new or
    /// existing) whose centroid lies below this distance of theirs: one person split into
    /// two groups by the founding is made whole again, as a centroid of several faces is
    /// steadier than any pair of them. 0 turns it off.
    #[serde(default)]
    pub merge: f32,
}

/// One face as the grouping sees it.
#[derive(Debug, Clone)]
pub struct Point {
    /// The face's id.
    pub id: i64,
    /// Its person now.
    pub person: Option<i64>,
    /// Placed by the user: never moved by the grouping.
    pub pinned: bool,
    /// Its photo: a person is never given two faces of one photo.
    pub photo: i64,
    /// Its quality ([`facenet::quality`]): below [`PeopleRule::min_quality`] a face joins no
    /// one and founds no one (it stays findable by face).
    pub quality: f32,
    /// Unit-length embedding.
    pub embedding: Vec<f32>,
}

/// What a grouping pass decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grouping {
    /// Faces that joined an existing person: `(face, person)`.
    pub joined: Vec<(i64, i64)>,
    /// New people, each as its faces (ids).
    pub new_people: Vec<Vec<i64>>,
}

/// One grouping pass over `points`: unassigned, unpinned faces join people or found new ones.
/// `rejects` holds `(face, person)` pairs the user undid. Deterministic: faces are visited in
/// the order given.
pub fn group(points: &[Point], rejects: &HashSet<(i64, i64)>, rule: PeopleRule) -> Grouping {
    let free: Vec<usize> = (0..points.len())
        .filter(|&i| {
            let p = &points[i];
            p.person.is_none() && !p.pinned && p.quality >= rule.min_quality
        })
        .collect();
    if free.is_empty() {
        return Grouping::default();
    }
    let emb: Vec<Vec<f32>> = points.iter().map(|p| p.embedding.clone()).collect();
    let near = neighbours(&emb, &free, rule.threshold);
    let near: HashMap<usize, &Vec<(usize, f32)>> = free.iter().copied().zip(near.iter()).collect();
    // Labels as they evolve: existing people keep their ids, new ones get negative ids until
    // the store numbers them.
    let mut label: Vec<Option<i64>> = points.iter().map(|p| p.person).collect();
    let mut size: HashMap<i64, usize> = HashMap::new();
    // The photos each person is in: one face per photo and person.
    let mut photos: HashMap<i64, HashSet<i64>> = HashMap::new();
    // Each person's sum of unit embeddings: their centroid's direction.
    let mut sums: HashMap<i64, Vec<f32>> = HashMap::new();
    let add = |sums: &mut HashMap<i64, Vec<f32>>, l: i64, e: &[f32]| {
        let s = sums.entry(l).or_insert_with(|| vec![0.0; e.len()]);
        s.iter_mut().zip(e).for_each(|(a, b)| *a += b);
    };
    for (l, p) in label.iter().zip(points) {
        if let Some(l) = l {
            *size.entry(*l).or_default() += 1;
            photos.entry(*l).or_default().insert(p.photo);
            add(&mut sums, *l, &p.embedding);
        }
    }
    let join_pass = |label: &mut Vec<Option<i64>>,
                     size: &mut HashMap<i64, usize>,
                     photos: &mut HashMap<i64, HashSet<i64>>,
                     sums: &mut HashMap<i64, Vec<f32>>| {
        let mut moved = 0;
        for &i in &free {
            if label[i].is_some() {
                continue;
            }
            let mut votes: BTreeMap<i64, (usize, f32)> = BTreeMap::new();
            for &(j, d) in near[&i] {
                if let Some(p) = label[j]
                    && !rejects.contains(&(points[i].id, p))
                    && !photos.get(&p).is_some_and(|s| s.contains(&points[i].photo))
                {
                    let v = votes.entry(p).or_default();
                    v.0 += 1;
                    v.1 += d;
                }
            }
            let best = votes
                .iter()
                .filter(|(p, (n, _))| *n >= rule.votes.min(size[p]).max(1))
                .max_by(|a, b| {
                    (a.1.0)
                        .cmp(&b.1.0)
                        .then((b.1.1 / b.1.0 as f32).total_cmp(&(a.1.1 / a.1.0 as f32)))
                })
                .map(|(p, _)| *p)
                .or_else(|| {
                    // The nearest centroid among the neighbours' people of two faces or more.
                    votes
                        .keys()
                        .filter(|p| size[p] >= 2)
                        .map(|&p| (centroid_distance(&sums[&p], &points[i].embedding), p))
                        .filter(|&(d, _)| d < rule.centroid)
                        .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
                        .map(|(_, p)| p)
                });
            if let Some(p) = best {
                label[i] = Some(p);
                *size.entry(p).or_default() += 1;
                photos.entry(p).or_default().insert(points[i].photo);
                add(sums, p, &points[i].embedding);
                moved += 1;
            }
        }
        moved
    };
    for _ in 0..4 {
        if join_pass(&mut label, &mut size, &mut photos, &mut sums) == 0 {
            break;
        }
    }
    // Founding among the faces still free: Chinese whispers on the graph of pairs closer than
    // `found` (label propagation does not chain two people through one stray pair as
    // single-link DBSCAN does); groups of at least `min_faces` become people.
    let mut still: Vec<usize> = free
        .iter()
        .copied()
        .filter(|&i| label[i].is_none())
        .collect();
    still.sort_unstable();
    let sub: Vec<Vec<f32>> = still.iter().map(|&i| points[i].embedding.clone()).collect();
    let groups = crate::cluster::chinese_whispers(&sub, rule.found, 100, 1);
    let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (k, g) in groups.into_iter().enumerate() {
        members.entry(g).or_default().push(still[k]);
    }
    let mut next = -1i64;
    for faces in members.into_values() {
        // Two faces of one photo are two people: the group keeps the best of each photo.
        let mut seen = HashSet::new();
        let mut faces = faces;
        faces.sort_by(|&a, &b| {
            points[b]
                .quality
                .total_cmp(&points[a].quality)
                .then(a.cmp(&b))
        });
        faces.retain(|&i| seen.insert(points[i].photo));
        if faces.len() >= rule.min_faces.max(2) {
            for &i in &faces {
                label[i] = Some(next);
                photos.entry(next).or_default().insert(points[i].photo);
                add(&mut sums, next, &points[i].embedding);
            }
            size.insert(next, faces.len());
            next -= 1;
        }
    }
    if rule.merge > 0.0 {
        merge_new_people(
            points,
            &free,
            rejects,
            rule.merge,
            &mut label,
            (&mut size, &mut photos, &mut sums),
        );
    }
    // New people may draw in faces that had too few votes before.
    for _ in 0..2 {
        if join_pass(&mut label, &mut size, &mut photos, &mut sums) == 0 {
            break;
        }
    }
    let mut new_people: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut joined = Vec::new();
    for &i in &free {
        match label[i] {
            Some(l) if l < 0 => new_people.entry(l).or_default().push(points[i].id),
            Some(l) => joined.push((points[i].id, l)),
            None => {}
        }
    }
    Grouping {
        joined,
        new_people: new_people.into_values().rev().collect(),
    }
}

/// Each person's faces, photos and sum of unit embeddings, as a grouping pass keeps them.
type Tallies<'a> = (
    &'a mut HashMap<i64, usize>,
    &'a mut HashMap<i64, HashSet<i64>>,
    &'a mut HashMap<i64, Vec<f32>>,
);

/// Merges the people founded in this pass (negative labels) with the person, new or
/// existing, whose centroid lies within `within` of theirs, nearest pairs first, in rounds
/// until none is left: a new person goes into an existing one (which keeps its id and
/// name), or the smaller of two new people into the larger. Each pair's distance is taken
/// again from the centroids as they are when its turn comes, so a person can take in several
/// others in one round. Two people in one photo, or a face the user took out of the person,
/// stop a merge; existing people never merge with each other here (that is `recluster`'s
/// whole pass, or the user's `merge`).
fn merge_new_people(
    points: &[Point],
    free: &[usize],
    rejects: &HashSet<(i64, i64)>,
    within: f32,
    label: &mut [Option<i64>],
    (size, photos, sums): Tallies<'_>,
) {
    // The faces of each new person (existing people never give theirs away here).
    let mut members: HashMap<i64, Vec<usize>> = HashMap::new();
    for &i in free {
        if let Some(l) = label[i].filter(|&l| l < 0) {
            members.entry(l).or_default().push(i);
        }
    }
    let limit = within * within;
    let unit = |sum: &[f32]| facenet::embed::l2_normalize(sum);
    loop {
        let mut ids: Vec<i64> = size
            .iter()
            .filter(|&(_, &n)| n >= 2)
            .map(|(&l, _)| l)
            .collect();
        ids.sort_unstable();
        let centroids: Vec<Vec<f32>> = ids.iter().map(|l| unit(&sums[l])).collect();
        // New people sort first (negative ids): every pair with one of them, once.
        let new = ids.partition_point(|&l| l < 0);
        let mut pairs: Vec<(f32, usize, usize)> = {
            use rayon::prelude::*;
            (0..new)
                .into_par_iter()
                .flat_map_iter(|a| {
                    let centroids = &centroids;
                    (a + 1..ids.len()).filter_map(move |b| {
                        let d = distance2(&centroids[a], &centroids[b]);
                        (d < limit).then_some((d, a, b))
                    })
                })
                .collect()
        };
        pairs.sort_by(|x, y| x.0.total_cmp(&y.0).then((x.1, x.2).cmp(&(y.1, y.2))));
        let mut merged = 0;
        for (_, a, b) in pairs {
            let (la, lb) = (ids[a], ids[b]);
            // Gone into another person already this round, or moved apart by a merge.
            if !size.contains_key(&la)
                || !size.contains_key(&lb)
                || distance2(&unit(&sums[&la]), &unit(&sums[&lb])) >= limit
            {
                continue;
            }
            let (pa, pb) = (&photos[&la], &photos[&lb]);
            let (small, large) = if pa.len() <= pb.len() {
                (pa, pb)
            } else {
                (pb, pa)
            };
            if small.iter().any(|p| large.contains(p)) {
                continue;
            }
            // `la` is new; it goes into an existing `lb`, or the smaller into the larger.
            let (from, into) = if lb >= 0 || (size[&la], la) < (size[&lb], lb) {
                (la, lb)
            } else {
                (lb, la)
            };
            let faces = members.get(&from).map_or(&[][..], Vec::as_slice);
            if faces
                .iter()
                .any(|&i| rejects.contains(&(points[i].id, into)))
            {
                continue;
            }
            let faces = members.remove(&from).unwrap_or_default();
            for &i in &faces {
                label[i] = Some(into);
            }
            if into < 0 {
                members.entry(into).or_default().extend(faces);
            }
            let n = size.remove(&from).unwrap_or(0);
            *size.entry(into).or_default() += n;
            let moved = photos.remove(&from).unwrap_or_default();
            photos.entry(into).or_default().extend(moved);
            if let Some(s) = sums.remove(&from) {
                let t = sums.entry(into).or_insert_with(|| vec![0.0; s.len()]);
                t.iter_mut().zip(&s).for_each(|(a, b)| *a += b);
            }
            merged += 1;
        }
        if merged == 0 {
            break;
        }
    }
}

/// The L2 distance from a unit embedding to the centroid whose direction `sum` gives.
fn centroid_distance(sum: &[f32], e: &[f32]) -> f32 {
    let norm = sum
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    let dot: f32 = sum.iter().zip(e).map(|(a, b)| a * b).sum::<f32>() / norm;
    (2.0 - 2.0 * dot).max(0.0).sqrt()
}

/// Clustering quality against the truth, BCubed (Amigó et al. 2009): each face's precision
/// is the share of its cluster that is its person, its recall the share of its person in its
/// cluster; both averaged over faces. Faces in no cluster count as clusters of one.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ClusterScore {
    /// Faces scored.
    pub faces: usize,
    /// People in the truth.
    pub people: usize,
    /// BCubed precision.
    pub precision: f64,
    /// BCubed recall.
    pub recall: f64,
    /// Their harmonic mean.
    pub f: f64,
    /// True people who share a cluster with someone else.
    pub merged: usize,
    /// True people whose faces lie in two or more clusters of two faces or more.
    pub split: usize,
    /// Clusters of two faces or more.
    pub clusters: usize,
    /// Faces in no cluster of two or more.
    pub alone: usize,
}

/// Scores `labels` (a cluster per face, `None` for none) against `truth` (a person per face).
pub fn score(labels: &[Option<i64>], truth: &[String]) -> ClusterScore {
    assert_eq!(labels.len(), truth.len(), "one label per face");
    let n = labels.len();
    // Faces alone get clusters of their own.
    let cluster: Vec<(bool, i64)> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| l.map_or((false, i as i64), |c| (true, c)))
        .collect();
    let mut cluster_size: HashMap<(bool, i64), usize> = HashMap::new();
    let mut person_size: HashMap<&str, usize> = HashMap::new();
    let mut both: HashMap<((bool, i64), &str), usize> = HashMap::new();
    for i in 0..n {
        *cluster_size.entry(cluster[i]).or_default() += 1;
        *person_size.entry(&truth[i]).or_default() += 1;
        *both.entry((cluster[i], &truth[i])).or_default() += 1;
    }
    let (mut p, mut r) = (0.0, 0.0);
    for i in 0..n {
        let common = both[&(cluster[i], truth[i].as_str())] as f64;
        p += common / cluster_size[&cluster[i]] as f64;
        r += common / person_size[truth[i].as_str()] as f64;
    }
    let (p, r) = (p / n.max(1) as f64, r / n.max(1) as f64);
    let mut people_in: HashMap<(bool, i64), HashSet<&str>> = HashMap::new();
    let mut clusters_of: HashMap<&str, HashSet<(bool, i64)>> = HashMap::new();
    for i in 0..n {
        if cluster_size[&cluster[i]] >= 2 {
            people_in.entry(cluster[i]).or_default().insert(&truth[i]);
            clusters_of.entry(&truth[i]).or_default().insert(cluster[i]);
        }
    }
    let merged: HashSet<&str> = people_in
        .values()
        .filter(|s| s.len() > 1)
        .flat_map(|s| s.iter().copied())
        .collect();
    ClusterScore {
        faces: n,
        people: person_size.len(),
        precision: p,
        recall: r,
        f: if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        },
        merged: merged.len(),
        split: clusters_of.values().filter(|s| s.len() > 1).count(),
        clusters: people_in.len(),
        alone: (0..n).filter(|&i| cluster_size[&cluster[i]] < 2).count(),
    }
}

/// The labels after grouping `faces` (photo, quality, embedding) from scratch in `batches`
/// consecutive parts, each grouped as one `library add` would (the earlier parts' people
/// kept): the evaluation's replay of an incremental library. New people are numbered from 1
/// in order of forming.
pub fn replay(
    faces: &[(i64, f32, Vec<f32>)],
    batches: usize,
    rule: PeopleRule,
) -> Vec<Option<i64>> {
    let n = faces.len();
    let mut points: Vec<Point> = faces
        .iter()
        .enumerate()
        .map(|(i, (photo, quality, e))| Point {
            id: i as i64,
            person: None,
            pinned: false,
            photo: *photo,
            quality: *quality,
            embedding: e.clone(),
        })
        .collect();
    let mut next = 1;
    let per = n.div_ceil(batches.max(1)).max(1);
    let none = HashSet::new();
    for end in (per..n + per).step_by(per) {
        let g = group(&points[..end.min(n)], &none, rule);
        apply(&mut points, &g, &mut next);
    }
    points.iter().map(|p| p.person).collect()
}

/// Writes a grouping into `points` (ids are indices), numbering new people from `next`.
fn apply(points: &mut [Point], g: &Grouping, next: &mut i64) {
    for &(f, p) in &g.joined {
        points[f as usize].person = Some(p);
    }
    for faces in &g.new_people {
        for &f in faces {
            points[f as usize].person = Some(*next);
        }
        *next += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit vectors around `k` well separated directions, `per` each.
    fn blobs(k: usize, per: usize, spread: f32) -> (Vec<Vec<f32>>, Vec<String>) {
        let mut rng = facenet::rng::Rng::new(7);
        let mut e = Vec::new();
        let mut t = Vec::new();
        for c in 0..k {
            for _ in 0..per {
                let mut v = vec![0f32; 16];
                v[c] = 1.0;
                for x in v.iter_mut() {
                    *x += spread * (rng.unit() as f32 - 0.5);
                }
                e.push(facenet::embed::l2_normalize(&v));
                t.push(format!("p{c}"));
            }
        }
        (e, t)
    }

    const RULE: PeopleRule = PeopleRule {
        threshold: 0.8,
        found: 0.8,
        min_faces: 3,
        votes: 2,
        min_quality: 0.3,
        centroid: 0.0,
        merge: 0.0,
    };

    /// Each vector a photo of its own, of good quality.
    fn faces(e: &[Vec<f32>]) -> Vec<(i64, f32, Vec<f32>)> {
        e.iter()
            .enumerate()
            .map(|(i, v)| (i as i64, 1.0, v.clone()))
            .collect()
    }

    /// A face on the unit circle at `deg` degrees, a photo of its own.
    fn point(id: i64, deg: f32, person: Option<i64>) -> Point {
        Point {
            id,
            person,
            pinned: false,
            photo: id,
            quality: 1.0,
            embedding: vec![deg.to_radians().cos(), deg.to_radians().sin()],
        }
    }

    /// The centroid join by hand: a face two of whose three neighbours are within the join
    /// threshold lacks the votes, but lies 12 degrees from the person's centroid, and joins
    /// through it; with the centroid join off it stays alone.
    #[test]
    fn a_face_near_a_persons_centroid_joins_without_the_votes() {
        let points = vec![
            point(0, -24.0, Some(1)),
            point(1, 0.0, Some(1)),
            point(2, 24.0, Some(1)),
            point(3, 12.0, None),
        ];
        // 12 degrees: chord 0.209 to the faces at 0 and 24 and to the centroid (at 0 degrees);
        // chord 0.618 to the face at -24, beyond the join threshold.
        let rule = PeopleRule {
            threshold: 0.45,
            found: 0.45,
            min_faces: 3,
            votes: 3,
            min_quality: 0.3,
            centroid: 0.3,
            merge: 0.0,
        };
        let none = HashSet::new();
        assert_eq!(group(&points, &none, rule).joined, vec![(3, 1)]);
        let off = PeopleRule {
            centroid: 0.0,
            ..rule
        };
        assert_eq!(group(&points, &none, off), Grouping::default());
        let tight = PeopleRule {
            centroid: 0.2,
            ..rule
        };
        assert!(group(&points, &none, tight).joined.is_empty());
        // A rejection holds against the centroid too.
        let rejected: HashSet<(i64, i64)> = [(3, 1)].into_iter().collect();
        assert!(group(&points, &rejected, rule).joined.is_empty());
    }

    /// The merge by hand: faces 2 degrees apart found two people (three faces each, 10
    /// degrees between the groups, beyond the founding threshold), whose centroids lie 14
    /// degrees (chord 0.244) apart: one person with a merge threshold of 0.3, two with 0.2
    /// or none. A new person goes into an existing one unless a face was taken out of it or
    /// the two share a photo.
    #[test]
    fn new_people_merge_by_their_centroids() {
        let angles = [0.0, 2.0, 4.0, 14.0, 16.0, 18.0];
        let fresh: Vec<Point> = angles
            .iter()
            .enumerate()
            .map(|(i, &a)| point(i as i64, a, None))
            .collect();
        let rule = PeopleRule {
            threshold: 0.1,
            found: 0.1,
            min_faces: 3,
            votes: 2,
            min_quality: 0.3,
            centroid: 0.0,
            merge: 0.3,
        };
        let none = HashSet::new();
        let mut people = group(&fresh, &none, rule).new_people;
        people.iter_mut().for_each(|p| p.sort_unstable());
        assert_eq!(people, vec![vec![0, 1, 2, 3, 4, 5]]);
        for apart in [0.0, 0.2] {
            let g = group(
                &fresh,
                &none,
                PeopleRule {
                    merge: apart,
                    ..rule
                },
            );
            assert_eq!(g.new_people.len(), 2, "merge {apart}: {g:?}");
        }
        // The first three already a person: the new three join them.
        let mut known = fresh.clone();
        known[..3].iter_mut().for_each(|p| p.person = Some(7));
        let g = group(&known, &none, rule);
        assert_eq!(
            (g.joined, g.new_people.len()),
            (vec![(3, 7), (4, 7), (5, 7)], 0)
        );
        // Face 4 was taken out of person 7: its group stays a person of its own.
        let rejected: HashSet<(i64, i64)> = [(4, 7)].into_iter().collect();
        let g = group(&known, &rejected, rule);
        assert_eq!((g.joined.len(), g.new_people.len()), (0, 1), "{g:?}");
        // Face 5 is in face 0's photo: two people, not merged.
        let mut shared = known.clone();
        shared[5].photo = 0;
        let g = group(&shared, &none, rule);
        assert_eq!((g.joined.len(), g.new_people.len()), (0, 1), "{g:?}");
    }

    #[test]
    fn distance2_matches_the_plain_sum() {
        let a: Vec<f32> = (0..13).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..13).map(|i| 1.0 - i as f32 * 0.05).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
        assert!((distance2(&a, &b) - plain).abs() < 1e-5);
    }

    #[test]
    fn separated_people_are_found_whole_and_apart() {
        let (e, t) = blobs(4, 6, 0.05);
        let labels = replay(&faces(&e), 1, RULE);
        let s = score(&labels, &t);
        assert_eq!(
            (s.precision, s.recall, s.merged, s.split),
            (1.0, 1.0, 0, 0),
            "{s:?}"
        );
        // In three batches: the same people.
        assert_eq!(score(&replay(&faces(&e), 3, RULE), &t).f, 1.0);
        // Poor faces are grouped with no one.
        let mut poor = faces(&e);
        poor[0].1 = 0.1;
        let labels = replay(&poor, 1, RULE);
        assert_eq!(labels[0], None);
        assert!(labels[1..].iter().all(Option::is_some));
        // Two faces of one photo never go to one person.
        let mut one_photo = faces(&e);
        one_photo[1].0 = one_photo[0].0;
        let labels = replay(&one_photo, 1, RULE);
        assert_ne!(labels[0], labels[1]);
        assert!(labels[0].is_some() && labels[2..6].iter().all(|l| *l == labels[0]));
    }

    #[test]
    fn fewer_than_min_faces_form_no_one() {
        let (e, t) = blobs(3, 2, 0.05);
        let labels = replay(&faces(&e), 1, RULE);
        assert!(labels.iter().all(|l| l.is_none()), "{labels:?}");
        let s = score(&labels, &t);
        assert_eq!((s.precision, s.alone, s.clusters), (1.0, 6, 0));
        assert!((s.recall - 0.5).abs() < 1e-9);
    }

    #[test]
    fn pinned_faces_stay_and_rejects_are_respected() {
        let (e, _) = blobs(1, 5, 0.05);
        let mut points: Vec<Point> = e
            .iter()
            .enumerate()
            .map(|(i, v)| Point {
                id: i as i64,
                person: (i < 3).then_some(10),
                pinned: false,
                photo: i as i64,
                quality: 1.0,
                embedding: v.clone(),
            })
            .collect();
        points[3].pinned = true;
        let rejects: HashSet<(i64, i64)> = [(4, 10)].into();
        let g = group(&points, &rejects, RULE);
        assert_eq!(
            g,
            Grouping::default(),
            "face 3 is pinned alone, 4 refused person 10"
        );
        let g = group(&points, &HashSet::new(), RULE);
        assert_eq!(g.joined, vec![(4, 10)]);
    }

    #[test]
    fn bcubed_by_hand() {
        // Truth a a b b; clusters {0,1,2} and 3 alone.
        let t: Vec<String> = ["a", "a", "b", "b"].map(String::from).into();
        let s = score(&[Some(1), Some(1), Some(1), None], &t);
        // Precision: 2/3, 2/3, 1/3, 1 -> 2.667/4; recall: 1, 1, 1/2, 1/2 -> 3/4.
        assert!((s.precision - (2.0 / 3.0 * 2.0 + 1.0 / 3.0 + 1.0) / 4.0).abs() < 1e-12);
        assert!((s.recall - 0.75).abs() < 1e-12);
        assert_eq!((s.merged, s.split, s.clusters, s.alone), (2, 0, 1, 1));
    }
}
