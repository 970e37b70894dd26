//! The recognizer: the face pipeline joined to a gallery store. Enrol, verify, identify,
//! calibrate and cluster are written here once; the CLI, the HTTP service and the Python
//! package translate to and from these calls.
//!
//! ```text
//! facenet enroll "Ada Lovelace" ada.jpg
//! facenet identify group.jpg --top 3
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use facenet::Distance;
use facenet::eval::Evaluation;
use facenet::eval::cohort::{
    COHORT_AIM, COHORT_K, COHORT_MIN_IDENTITIES, CohortThresholds, Scoring,
};
use facenet::eval::openset::ImpostorTable;
use facenet::image::RgbImage;
use facenet::pipeline::{Face, FaceChoice, FacePipeline, NoFace};
use facenet::quality::Quality;
use serde::Serialize;

use crate::search::GalleryRule;
use crate::{
    GalleryError, GalleryStore, LiveIndex, Match, ModelInfo, NewFace, Refresh, Result, SearchIndex,
    Settings,
};

/// Default decision threshold, L2 distance between unit embeddings (0..2), for the Keras
/// FaceNet model with prewhiten input and MTCNN crops (margin 32, 160x160): the threshold of
/// best accuracy over the 6,000 LFW pairs (`facenet evaluate`). The course notebook's 0.7 is
/// for its own x/255 input and is far too strict here.
pub const DEFAULT_THRESHOLD: f32 = 1.115;

/// The default target of identification: at most 1 % of strangers named as someone, whatever
/// the gallery's size.
pub const DEFAULT_FIR: f64 = 0.01;

/// The default per-pair false accept rate of verification (1:1): FaceNet reports VAL at this
/// rate. 1.115, the best-accuracy threshold on LFW's balanced pairs, accepts 1 % of impostor
/// pairs, loose for checks such as "is this the account holder".
pub const DEFAULT_VERIFY_FAR: f64 = 1e-3;

/// The name the fronts show for a face that matches no one within the threshold. It is only
/// a label: whether a face is known is [`Identity`]'s variant, so a subject may be called
/// "unknown".
pub const UNKNOWN: &str = "unknown";

/// Who a face is: an enrolled identity within the threshold, or no one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// This enrolled identity.
    Known(String),
    /// No identity within the threshold (or an empty gallery).
    Unknown,
}

impl Identity {
    /// The name to show: the identity's, or [`UNKNOWN`].
    pub fn name(&self) -> &str {
        match self {
            Identity::Known(n) => n,
            Identity::Unknown => UNKNOWN,
        }
    }

    /// Whether it is an enrolled identity.
    pub fn is_known(&self) -> bool {
        matches!(self, Identity::Known(_))
    }

    /// The enrolled identity, if known.
    pub fn known(&self) -> Option<&str> {
        match self {
            Identity::Known(n) => Some(n),
            Identity::Unknown => None,
        }
    }
}

/// Serialized as two fields of the face: `"identity"` (the name, or `"unknown"`) and
/// `"known"` (which of the two it is).
impl Serialize for Identity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("identity", self.name())?;
        m.serialize_entry("known", &self.is_known())?;
        m.end()
    }
}

/// Where a decision threshold came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThresholdSource {
    /// Given with the request (a flag, a query parameter, an argument).
    Explicit,
    /// The gallery's calibrated 1:1 threshold (`facenet calibrate --store`).
    Calibrated,
    /// Derived from the impostor table for a per-pair false accept rate (verification).
    TargetFar,
    /// Derived from the impostor table and the gallery's size for a false-identification rate
    /// (identification).
    TargetFir,
    /// [`DEFAULT_THRESHOLD`]: no impostor table for these weights.
    Default,
}

impl ThresholdSource {
    /// The name every front reports (`explicit`, `calibrated`, `target-far`, `target-fir`,
    /// `default`; the serde name).
    pub fn name(self) -> &'static str {
        match self {
            ThresholdSource::Explicit => "explicit",
            ThresholdSource::Calibrated => "calibrated",
            ThresholdSource::TargetFar => "target-far",
            ThresholdSource::TargetFir => "target-fir",
            ThresholdSource::Default => "default",
        }
    }
}

/// A decision threshold with its source. Unit: L2 distance between unit embeddings (0..2),
/// or, under [`Scoring::Cohort`], the cohort score (a distance less a mean distance, below
/// zero); a value below it means "the same person".
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Threshold {
    /// The distance.
    pub value: f32,
    /// Where it came from.
    pub source: ThresholdSource,
    /// The rate it was derived for: the false-identification rate (identification) or the
    /// per-pair false accept rate (verification).
    pub target: Option<f64>,
    /// Gallery entries a stranger is compared with (identification).
    pub comparisons: Option<usize>,
    /// The per-pair false accept rate at this threshold, by the impostor table.
    pub far: Option<f64>,
    /// The expected share of strangers named as someone at this threshold and gallery size,
    /// by the impostor table's per-probe spread ([`ImpostorTable::fir`]).
    pub expected_fir: Option<f64>,
    /// The expected share of enrolled people's photos named at this threshold with one photo
    /// per person, and with three ([`ImpostorTable::expected_dir`]).
    pub expected_dir: Option<[f64; 2]>,
    /// What the threshold is compared with: the distance, or the cohort score (then
    /// `value` is a cohort score, below zero).
    pub scoring: Scoring,
    /// Derived from tables measured on the gallery's own labelled photos (`facenet calibrate
    /// --store`), not from those shipped for the weights.
    pub own_table: bool,
}

impl Threshold {
    fn fixed(value: f32, source: ThresholdSource) -> Self {
        Self {
            value,
            source,
            own_table: false,
            target: None,
            comparisons: None,
            far: None,
            expected_fir: None,
            expected_dir: None,
            scoring: Scoring::Distance,
        }
    }

    /// The cohort rule ([`facenet::eval::cohort`]) for a gallery of `identities`: derived
    /// from `table` for the target `fir` (else the gallery's, else [`DEFAULT_FIR`]). `None`
    /// where the gallery is too small for a cohort or the table has no threshold.
    pub fn for_cohort(
        fir: Option<f64>,
        settings: &Settings,
        table: &CohortThresholds,
        identities: usize,
    ) -> Result<Option<Self>> {
        let target = fir.or(settings.target_fir).unwrap_or(DEFAULT_FIR);
        crate::check_rate(target)?;
        if identities < COHORT_MIN_IDENTITIES {
            return Ok(None);
        }
        Ok(table
            .threshold_for_fir(target, identities)
            .map(|value| Self {
                target: Some(target),
                comparisons: Some(identities),
                // The table is set to a share of its targets (COHORT_AIM) of strangers.
                expected_fir: Some(target * COHORT_AIM),
                expected_dir: table.expected_dir(target, identities),
                scoring: Scoring::Cohort,
                ..Self::fixed(value, ThresholdSource::TargetFir)
            }))
    }

    /// The 1:1 rule: explicit, else the gallery's calibrated threshold, else the one for
    /// [`DEFAULT_VERIFY_FAR`] by the impostor table, else [`DEFAULT_THRESHOLD`].
    pub fn for_verification(
        explicit: Option<f32>,
        settings: &Settings,
        table: Option<&ImpostorTable>,
    ) -> Result<Self> {
        if let Some(value) = explicit {
            crate::check_threshold(Some(value))?;
            return Ok(Self::fixed(value, ThresholdSource::Explicit));
        }
        if let Some(value) = settings.threshold {
            return Ok(Self::fixed(value, ThresholdSource::Calibrated));
        }
        Ok(match table {
            Some(t) => {
                let value = t.threshold_for_far(DEFAULT_VERIFY_FAR);
                Self {
                    target: Some(DEFAULT_VERIFY_FAR),
                    far: Some(t.far(value)),
                    ..Self::fixed(value, ThresholdSource::TargetFar)
                }
            }
            None => Self::fixed(DEFAULT_THRESHOLD, ThresholdSource::Default),
        })
    }

    /// The 1:N rule: explicit, else derived for the target false-identification rate (`fir`,
    /// else the gallery's, else [`DEFAULT_FIR`]) from the impostor table and the number of
    /// gallery entries a stranger is compared with, else [`DEFAULT_THRESHOLD`].
    pub fn for_identification(
        explicit: Option<f32>,
        fir: Option<f64>,
        settings: &Settings,
        table: Option<&ImpostorTable>,
        comparisons: usize,
    ) -> Result<Self> {
        let with_rates = |t: Self| match table {
            Some(tab) => {
                let far = tab.far(t.value);
                Self {
                    comparisons: Some(comparisons),
                    far: Some(far),
                    expected_fir: Some(tab.fir(t.value, comparisons)),
                    expected_dir: tab
                        .expected_dir(t.value, 1)
                        .zip(tab.expected_dir(t.value, 3))
                        .map(|(a, b)| [a, b]),
                    ..t
                }
            }
            None => t,
        };
        if let Some(value) = explicit {
            crate::check_threshold(Some(value))?;
            return Ok(with_rates(Self::fixed(value, ThresholdSource::Explicit)));
        }
        let target = fir.or(settings.target_fir).unwrap_or(DEFAULT_FIR);
        crate::check_rate(target)?;
        Ok(match table {
            Some(tab) => {
                let value = tab.threshold_for_fir(target, comparisons);
                with_rates(Self {
                    target: Some(target),
                    ..Self::fixed(value, ThresholdSource::TargetFir)
                })
            }
            None => Self::fixed(DEFAULT_THRESHOLD, ThresholdSource::Default),
        })
    }

    /// Whether a distance means "the same person".
    pub fn accepts(&self, distance: f32) -> bool {
        distance < self.value
    }

    /// The source in words.
    pub fn describe(&self) -> String {
        let pct = |f: f64| format!("{:.3} %", 100.0 * f);
        match self.source {
            ThresholdSource::Explicit => "given".into(),
            ThresholdSource::Calibrated => "the gallery's calibrated threshold".into(),
            ThresholdSource::TargetFar => format!(
                "per-pair false accept rate {} by the impostor table",
                self.target.unwrap_or(0.0)
            ),
            ThresholdSource::TargetFir => {
                let mut s = match self.scoring {
                    Scoring::Cohort => format!(
                        "cohort score (distance less the entry's mean distance to its {COHORT_K} \
                         nearest other people) derived for at most {} of strangers named as \
                         someone among {} identities",
                        pct(self.target.unwrap_or(0.0)),
                        self.comparisons.unwrap_or(0),
                    ),
                    Scoring::Distance => format!(
                        "derived for at most {} of strangers named as someone among {} gallery entries; expected {}",
                        pct(self.target.unwrap_or(0.0)),
                        self.comparisons.unwrap_or(0),
                        pct(self.expected_fir.unwrap_or(0.0)),
                    ),
                };
                if let Some([one, three]) = self.expected_dir {
                    s.push_str(&format!(
                        "; about {:.0} % of enrolled people's photos named with one photo each, {:.0} % with three",
                        100.0 * one,
                        100.0 * three
                    ));
                }
                if self.own_table {
                    s.push_str(
                        "; measured on this gallery's own labelled photos (facenet calibrate)",
                    );
                }
                s
            }
            ThresholdSource::Default => {
                "default, best accuracy on LFW (no impostor table for these weights)".into()
            }
        }
    }
}

/// The impostor table of a gallery: its own (`facenet calibrate --store`) where it belongs to
/// the model `fingerprint`, else the one shipped for the weights.
pub fn impostor_table_for(settings: &Settings, fingerprint: &str) -> Option<ImpostorTable> {
    settings
        .impostor
        .clone()
        .filter(|t| t.fingerprint == fingerprint)
        .or_else(|| {
            // Mirror-averaged embeddings keep the plain ones' table (their distances are
            // slightly smaller: on LFW, 1.23 % of strangers named instead of 1.13 %).
            facenet::eval::openset::bundled_table(fingerprint.trim_end_matches("+mirror"))
        })
}

/// The identification threshold of a gallery of `identities` (and `entries` searched:
/// faces, or one centroid per identity): under [`Scoring::Cohort`], where the gallery has
/// [`COHORT_MIN_IDENTITIES`] identities or more and no threshold is `explicit`, derived from
/// the gallery's own cohort table (`facenet calibrate --store`: the user's own labelled photos
/// describe their people better than LFW does), else from the one shipped for the weights
/// `fingerprint` where there is one and the gallery has no impostor table of its own;
/// otherwise the distance's ([`Threshold::for_identification`]).
pub fn identification_threshold(
    scoring: Scoring,
    (explicit, fir): (Option<f32>, Option<f64>),
    settings: &Settings,
    fingerprint: &str,
    (identities, entries): (usize, usize),
) -> Result<Threshold> {
    let plain = fingerprint.trim_end_matches("+mirror");
    let own_table = settings
        .impostor
        .as_ref()
        .is_some_and(|t| t.fingerprint == fingerprint);
    let own_cohort = settings
        .cohort
        .as_ref()
        .filter(|t| t.fingerprint == fingerprint || t.fingerprint == plain);
    let bundled = (own_cohort.is_none() && !own_table)
        .then(|| facenet::eval::cohort::bundled_cohort(plain))
        .flatten();
    let cohort_table = own_cohort.or(bundled.as_ref());
    if scoring == Scoring::Cohort
        && explicit.is_none()
        && let Some(table) = cohort_table
        && let Some(t) = Threshold::for_cohort(fir, settings, table, identities)?
    {
        return Ok(Threshold {
            own_table: own_cohort.is_some(),
            ..t
        });
    }
    let table = impostor_table_for(settings, fingerprint);
    let t = Threshold::for_identification(explicit, fir, settings, table.as_ref(), entries)?;
    Ok(Threshold {
        own_table: own_table && t.source == ThresholdSource::TargetFir,
        ..t
    })
}

/// Below this expected share of enrolled people's photos named (one photo per person),
/// enrolment answers with [`Recognizer::advice`].
pub const ADVICE_BELOW: f64 = 0.5;

/// The result of an enrolment.
#[derive(Debug, Clone, Serialize)]
pub struct Enrolment {
    /// The identity.
    pub identity: String,
    /// Faces stored.
    pub faces: usize,
    /// Their ids in the store.
    pub ids: Vec<i64>,
}

/// Two photos compared ([`Recognizer::verify_photos`]).
#[derive(Debug, Clone, Serialize)]
pub struct PairVerification {
    /// L2 distance between the unit embeddings (0..2).
    pub distance: f32,
    /// The threshold that decided, with its source.
    pub threshold: Threshold,
    /// `distance < threshold`.
    pub verified: bool,
    /// The faces' boxes.
    pub bboxes: [Option<[f32; 4]>; 2],
}

/// What became of one photo of [`Recognizer::enroll_each`].
#[derive(Debug, Clone, Serialize)]
pub struct PhotoEnrolment {
    /// The photo's label.
    pub label: String,
    /// The stored face's id, or `None` when the photo was refused.
    pub face_id: Option<i64>,
    /// The face's box in the photo.
    pub bbox: Option<[f32; 4]>,
    /// The face's quality ([`facenet::quality`]), also where it was too low to enrol.
    pub quality: Option<Quality>,
    /// Why the photo was refused (no face, several comparable faces, undecodable...).
    pub error: Option<String>,
    /// The refusal's kind where the photo had no usable face (a front adds its own hint).
    #[serde(skip)]
    pub no_face: Option<NoFace>,
}

/// One face of a photo, identified.
#[derive(Debug, Clone, Serialize)]
pub struct Identification {
    /// Index of the face in the photo ([`facenet::align::order`]: 0 is the face of the photo).
    pub face: usize,
    /// Its box, when detected.
    #[serde(rename = "box")]
    pub bbox: Option<[f32; 4]>,
    /// Detector score, when detected.
    pub score: Option<f32>,
    /// The face's quality ([`facenet::quality`]), when detected.
    pub quality: Option<Quality>,
    /// The best identity, or [`Identity::Unknown`] when its distance (its cohort score, under
    /// [`Scoring::Cohort`]) is not below the threshold.
    #[serde(flatten)]
    pub identity: Identity,
    /// Distance to the best identity (L2 between unit embeddings).
    pub distance: Option<f32>,
    /// The best identity's cohort score, when the threshold applies to it
    /// ([`Scoring::Cohort`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cohort_score: Option<f32>,
    /// The threshold applied.
    pub threshold: f32,
    /// Where the threshold came from.
    pub threshold_source: ThresholdSource,
    /// The share of strangers expected to be named as someone at this threshold and gallery
    /// size (by the impostor table).
    pub expected_fir: Option<f64>,
    /// How much farther the second-best identity is.
    pub margin: Option<f32>,
    /// The best identities, nearest first.
    pub candidates: Vec<Match>,
}

/// The result of a 1:1 check against an enrolled identity.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// The claimed identity.
    pub identity: String,
    /// Distance to its closest enrolled face.
    pub distance: f32,
    /// The threshold applied, with its source.
    pub threshold: Threshold,
    /// `distance < threshold`.
    pub verified: bool,
    /// The face's box in the photo, when detected.
    #[serde(rename = "box")]
    pub bbox: Option<[f32; 4]>,
}

/// Thresholds measured on labelled photos.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    /// Faces embedded.
    pub faces: usize,
    /// People among them.
    pub people: usize,
    /// Same-person pairs.
    pub positives: usize,
    /// Different-person pairs.
    pub negatives: usize,
    /// Photos without a face, skipped.
    pub skipped: Vec<PathBuf>,
    /// Accuracy, thresholds and rates over all pairs.
    pub evaluation: Evaluation,
    /// The impostor distances of these photos (every different-person pair), which
    /// identification can use instead of the table shipped for the weights.
    #[serde(skip)]
    pub impostor: ImpostorTable,
    /// The cohort score's thresholds measured on these photos (galleries of one photo per
    /// person drawn from them, a photo of each other person as a stranger); `None` with fewer
    /// than [`facenet::eval::cohort::COHORT_MIN_PEOPLE`] people.
    #[serde(skip)]
    pub cohort: Option<CohortThresholds>,
}

/// A gallery ready to search, with the threshold to apply: the recognizer's live index (every
/// face in one matrix, and an HNSW graph for large galleries), or the store itself where it
/// searches itself (by distance or by the cohort score, as the threshold says). Cheap to
/// make: make one per request, or one for many queries.
#[derive(Debug)]
pub struct Searcher {
    backend: Backend,
    threshold: Threshold,
}

/// Where a [`Searcher`] looks.
#[derive(Debug)]
enum Backend {
    /// The gallery's faces (or centroids) in this process, read for this searcher alone (a
    /// store that keeps no record of its changes).
    Index(Box<SearchIndex>),
    /// The recognizer's live index, shared with every other searcher of the gallery.
    Live(Arc<LiveIndex>),
    /// The store searches itself (a database server), comparing with this many entries.
    Store(Arc<dyn GalleryStore>, GalleryRule, usize),
}

impl Searcher {
    /// The threshold applied.
    pub fn threshold(&self) -> Threshold {
        self.threshold
    }

    /// Number of gallery entries a probe is compared with (faces, or identities under the
    /// centroid rule).
    pub fn len(&self) -> usize {
        match &self.backend {
            Backend::Index(i) => i.len(),
            Backend::Live(live) => live.read().as_ref().map_or(0, |s| s.index.len()),
            Backend::Store(_, _, n) => *n,
        }
    }

    /// Whether the gallery has no face.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Identifies one embedding: the best `top_k` identities, `unknown` above the threshold.
    pub fn identify(&self, face: usize, f: &Face, top_k: usize) -> Result<Identification> {
        let k = top_k.max(2);
        let cohort = self.threshold.scoring == Scoring::Cohort;
        let search = |i: &SearchIndex| match cohort {
            true => i.search_cohort(&f.embedding, k),
            false => i.search(&f.embedding, k),
        };
        let m = match &self.backend {
            Backend::Index(i) => search(i)?,
            Backend::Live(live) => match live.read().as_ref() {
                Some(s) => search(&s.index)?,
                None => Vec::new(),
            },
            Backend::Store(store, rule, _) => store
                .search(&f.embedding, k, *rule, self.threshold.scoring)?
                .ok_or_else(|| GalleryError::Invalid("the store no longer searches".into()))?,
        };
        let best = m.first();
        let known =
            best.is_some_and(|b| self.threshold.accepts(b.cohort_score.unwrap_or(b.distance)));
        Ok(Identification {
            face,
            bbox: f.detection.map(|d| d.bbox),
            score: f.detection.map(|d| d.score),
            quality: f.quality,
            identity: match best {
                Some(b) if known => Identity::Known(b.identity.clone()),
                _ => Identity::Unknown,
            },
            distance: best.map(|b| b.distance),
            cohort_score: best.and_then(|b| b.cohort_score),
            threshold: self.threshold.value,
            threshold_source: self.threshold.source,
            expected_fir: self.threshold.expected_fir,
            margin: match (m.first(), m.get(1)) {
                (Some(a), Some(b)) => Some(
                    b.cohort_score.unwrap_or(b.distance) - a.cohort_score.unwrap_or(a.distance),
                ),
                _ => None,
            },
            candidates: m.into_iter().take(top_k.max(1)).collect(),
        })
    }
}

/// The face pipeline over a gallery store.
#[derive(Debug, Clone)]
pub struct Recognizer {
    pipeline: Arc<FacePipeline>,
    store: Arc<dyn GalleryStore>,
    model: ModelInfo,
    rule: GalleryRule,
    /// The gallery in memory, shared by clones.
    live: Arc<LiveIndex>,
    min_quality: f32,
    scoring: Scoring,
}

impl Recognizer {
    /// Joins a pipeline and a store.
    pub fn new(pipeline: Arc<FacePipeline>, store: Arc<dyn GalleryStore>) -> Self {
        let m = pipeline.embedder().metadata();
        // Embeddings averaged with the mirror image are another model's as far as a gallery
        // is concerned: they are not mixed with plain ones.
        let mirror = if pipeline.embedder().mirror() {
            "+mirror"
        } else {
            ""
        };
        let model = ModelInfo {
            fingerprint: format!("{}{mirror}", m.fingerprint),
            dim: m.config.embedding_dim,
        };
        Self {
            pipeline,
            store,
            model,
            rule: GalleryRule::Centroid,
            live: Arc::default(),
            min_quality: facenet::quality::ENROL_MIN,
            scoring: Scoring::default(),
        }
    }

    /// What identification thresholds: the cohort score ([`facenet::eval::cohort`], the
    /// default) where the gallery has at least [`COHORT_MIN_IDENTITIES`] identities and the
    /// weights have a cohort table, else the distance; an explicit threshold is always a
    /// distance. A store that searches itself (PostgreSQL) computes the score in the database.
    pub fn with_scoring(mut self, scoring: Scoring) -> Self {
        self.scoring = scoring;
        self
    }

    /// What identification thresholds.
    pub fn scoring(&self) -> Scoring {
        self.scoring
    }

    /// How identification compares a probe with a person's several photos: their centroid
    /// (the default: on LFW with 3 photos per person it names 82.8 % of probes correctly at
    /// 1 % false identifications, the nearest photo 75.9 %), or the nearest photo.
    pub fn with_rule(mut self, rule: GalleryRule) -> Self {
        self.rule = rule;
        self.live = Arc::default();
        self
    }

    /// The model of the pipeline's embeddings.
    pub fn model(&self) -> &ModelInfo {
        &self.model
    }

    /// The face pipeline.
    pub fn pipeline(&self) -> &FacePipeline {
        &self.pipeline
    }

    /// The store.
    pub fn store(&self) -> &dyn GalleryStore {
        self.store.as_ref()
    }

    /// The impostor table in force: the gallery's own (`calibrate --store`, for these
    /// weights), else the one shipped for the weights, if any.
    pub fn impostor_table(&self, settings: &Settings) -> Option<ImpostorTable> {
        impostor_table_for(settings, &self.model.fingerprint)
    }

    /// The 1:1 threshold ([`Threshold::for_verification`]) on this gallery.
    pub fn verify_threshold(&self, explicit: Option<f32>) -> Result<Threshold> {
        let settings = self.store.settings()?;
        let table = self.impostor_table(&settings);
        Threshold::for_verification(explicit, &settings, table.as_ref())
    }

    /// Sets the quality a face needs to be enrolled ([`facenet::quality`]; default
    /// [`facenet::quality::ENROL_MIN`]; 0 takes every face). Identification takes every face
    /// whatever this says.
    pub fn with_min_quality(mut self, minimum: f32) -> Self {
        self.min_quality = minimum;
        self
    }

    /// The quality a face needs to be enrolled.
    pub fn min_quality(&self) -> f32 {
        self.min_quality
    }

    /// Advice on what this gallery can do, where it is needed: when, at the gallery's size and
    /// target FIR, fewer than [`ADVICE_BELOW`] of enrolled people's photos are expected to be
    /// named with one photo each, the expected shares with one and three photos, and what to
    /// do. `None` while the gallery can do more, or without a table to tell.
    pub fn advice(&self) -> Result<Option<String>> {
        // Only the gallery's size is needed: a gallery already in memory is brought up to
        // date; one that is not (a CLI enrolment) is counted, not read.
        let t = if self.live.read().is_some() || self.store.entries(self.rule)?.is_some() {
            self.searcher(None, None)?.threshold()
        } else {
            let settings = self.store.settings()?;
            let ids = self.store.identities()?;
            let n = match self.rule {
                GalleryRule::Centroid => ids.len(),
                GalleryRule::NearestSample => ids.iter().map(|(_, k)| k).sum(),
            };
            identification_threshold(
                self.scoring,
                (None, None),
                &settings,
                &self.model.fingerprint,
                (ids.len(), n),
            )?
        };
        Ok(match (t.source, t.expected_dir, t.comparisons) {
            (ThresholdSource::TargetFir, Some([one, three]), Some(n)) if one < ADVICE_BELOW => {
                Some(format!(
                    "at {n} gallery entries and {:.3} % false identifications, about {:.0} % of \
                     enrolled people's photos will be named with one photo per person and {:.0} % \
                     with three: enrol three or more photos per person, or accept more strangers \
                     named (a higher --fir)",
                    100.0 * t.target.unwrap_or(0.0),
                    100.0 * one,
                    100.0 * three
                ))
            }
            _ => None,
        })
    }

    /// The enrolment gate: a face below the quality asked for is refused, with its quality.
    fn gate(&self, face: Face) -> std::result::Result<Face, NoFace> {
        match face.quality {
            Some(quality) if quality.score < self.min_quality => Err(NoFace::LowQuality {
                quality,
                minimum: self.min_quality,
            }),
            _ => Ok(face),
        }
    }

    /// Enrols `identity` from photos (`(label, image)`), one face each chosen by `choice`, in
    /// one transaction: a photo without a usable face fails the whole call, naming it, and
    /// nothing is stored.
    pub fn enroll(
        &self,
        identity: &str,
        photos: &[(String, RgbImage)],
        choice: FaceChoice,
    ) -> Result<Enrolment> {
        self.store.check_model(&self.model)?;
        let mut new = Vec::with_capacity(photos.len());
        for (label, img) in photos {
            let face = self
                .pipeline
                .face(img, choice)?
                .and_then(|f| self.gate(f))
                .map_err(|why| no_face(label, why))?;
            new.push(new_face(label.clone(), face));
        }
        let ids = self.store.enroll(identity, &new, &self.model)?;
        Ok(Enrolment {
            identity: identity.into(),
            faces: ids.len(),
            ids,
        })
    }

    /// Enrols `identity` from a batch of photos, each judged on its own: a photo without a
    /// usable face (or one that failed to decode, `Err(reason)`) is reported and skipped,
    /// the faces of the others are stored in one transaction. A result per photo, in order.
    pub fn enroll_each(
        &self,
        identity: &str,
        photos: Vec<(String, std::result::Result<RgbImage, String>)>,
        choice: FaceChoice,
    ) -> Result<Vec<PhotoEnrolment>> {
        self.store.check_model(&self.model)?;
        let mut results = Vec::with_capacity(photos.len());
        let mut new = Vec::new();
        for (label, img) in photos {
            let face = match img {
                Ok(img) => self
                    .pipeline
                    .face(&img, choice)?
                    .and_then(|f| self.gate(f))
                    .map_err(|why| (why.to_string(), Some(why))),
                Err(e) => Err((e, None)),
            };
            let quality = match &face {
                Ok(f) => f.quality,
                Err((_, Some(NoFace::LowQuality { quality, .. }))) => Some(*quality),
                Err(_) => None,
            };
            results.push(PhotoEnrolment {
                quality,
                bbox: face.as_ref().ok().and_then(|f| f.detection.map(|d| d.bbox)),
                error: face.as_ref().err().map(|e| e.0.clone()),
                no_face: face.as_ref().err().and_then(|e| e.1.clone()),
                face_id: None,
                label: label.clone(),
            });
            if let Ok(face) = face {
                new.push(new_face(label, face));
            }
        }
        if !new.is_empty() {
            let mut ids = self.store.enroll(identity, &new, &self.model)?.into_iter();
            for r in results.iter_mut().filter(|r| r.error.is_none()) {
                r.face_id = ids.next();
            }
        }
        Ok(results)
    }

    /// [`Recognizer::enroll`] from image files (each read as the pipeline reads).
    pub fn enroll_files(
        &self,
        identity: &str,
        photos: &[PathBuf],
        choice: FaceChoice,
    ) -> Result<Enrolment> {
        let imgs = photos
            .iter()
            .map(|p| Ok((p.display().to_string(), self.pipeline.load(p)?)))
            .collect::<Result<Vec<_>>>()?;
        self.enroll(identity, &imgs, choice)
    }

    /// The gallery ready to search, with the identification threshold (`explicit`, else
    /// derived for the target false-identification rate `fir`, see
    /// [`Threshold::for_identification`]; a stranger is compared with every gallery entry: one
    /// per identity under the centroid rule, every face under the nearest-sample rule).
    ///
    /// The gallery is held in memory by the recognizer (and its clones): read whole by the
    /// first call, then brought up to date before each search with what any process wrote
    /// since ([`LiveIndex::refresh`]). From [`crate::ANN_MIN_FACES`] entries on, an HNSW graph
    /// is used, saved beside the gallery where the store keeps files and reused while its
    /// faces are unchanged. A store that searches itself (PostgreSQL) is searched in place.
    pub fn searcher(&self, explicit: Option<f32>, fir: Option<f64>) -> Result<Searcher> {
        self.store.check_model(&self.model)?;
        // The threshold for a gallery of these identities and entries, under `scoring`.
        let threshold = |scoring: Scoring, settings: &Settings, sizes: (usize, usize)| {
            identification_threshold(
                scoring,
                (explicit, fir),
                settings,
                &self.model.fingerprint,
                sizes,
            )
        };
        if let Some((identities, n)) = self.store.entries(self.rule)? {
            return Ok(Searcher {
                threshold: threshold(self.scoring, &self.store.settings()?, (identities, n))?,
                backend: Backend::Store(self.store.clone(), self.rule, n),
            });
        }
        if self.live.refresh(self.store.as_ref(), self.rule)? != Refresh::Untracked
            && let Some(state) = self.live.read().as_ref()
        {
            let sizes = (state.index.identities(), state.index.len());
            return Ok(Searcher {
                threshold: threshold(self.scoring, &state.settings, sizes)?,
                backend: Backend::Live(self.live.clone()),
            });
        }
        let index = Box::new(crate::live::read_whole(self.store.as_ref(), self.rule)?);
        let sizes = (index.identities(), index.len());
        Ok(Searcher {
            threshold: threshold(self.scoring, &self.store.settings()?, sizes)?,
            backend: Backend::Index(index),
        })
    }

    /// The live index's catch-up with the store, alone (a service can call it after each of
    /// its own writes, or on a timer, so that the next search finds nothing to read).
    pub fn refresh(&self) -> Result<Refresh> {
        self.live.refresh(self.store.as_ref(), self.rule)
    }

    /// Every face of a photo, identified against `searcher` (build it once for many photos).
    pub fn identify(
        &self,
        searcher: &Searcher,
        img: &RgbImage,
        top_k: usize,
    ) -> Result<Vec<Identification>> {
        self.pipeline
            .faces(img)?
            .iter()
            .enumerate()
            .map(|(i, f)| searcher.identify(i, f, top_k))
            .collect()
    }

    /// Is the face of this photo (the primary one) the enrolled `identity`? `Ok(None)` when
    /// the photo has no face.
    pub fn verify(
        &self,
        img: &RgbImage,
        identity: &str,
        explicit: Option<f32>,
    ) -> Result<Option<Verification>> {
        self.store.check_model(&self.model)?;
        let enrolled = SearchIndex::new(&self.store.faces(Some(identity))?)?;
        let Ok(face) = self.pipeline.face(img, FaceChoice::Primary)? else {
            return Ok(None);
        };
        let threshold = self.verify_threshold(explicit)?;
        let best = enrolled
            .search(&face.embedding, 1)?
            .into_iter()
            .next()
            .ok_or_else(|| GalleryError::UnknownIdentity(identity.into()))?;
        Ok(Some(Verification {
            identity: identity.into(),
            distance: best.distance,
            threshold,
            verified: threshold.accepts(best.distance),
            bbox: face.detection.map(|d| d.bbox),
        }))
    }

    /// Are the faces of two photos (the primary face of each) the same person? The 1:1
    /// threshold of this gallery ([`Recognizer::verify_threshold`]) decides. A photo without
    /// a face is an error naming it (`labels`).
    pub fn verify_photos(
        &self,
        photos: [(&str, &RgbImage); 2],
        explicit: Option<f32>,
    ) -> Result<PairVerification> {
        let threshold = self.verify_threshold(explicit)?;
        verify_pair(&self.pipeline, photos, threshold)
    }

    /// Thresholds from labelled photos (`(person, path)`, the primary face of each): the
    /// one for `far` and the one of best accuracy, over every pair, and the tables
    /// identification derives its thresholds from. `progress` follows the photos, then the
    /// cohort table's draws.
    pub fn calibrate(
        &self,
        labelled: &[(String, PathBuf)],
        far: f64,
        progress: &dyn facenet::eval::protocol::Progress,
    ) -> Result<Calibration> {
        let mut faces = Vec::new();
        let mut skipped = Vec::new();
        progress.start("photos", labelled.len());
        for (person, path) in labelled {
            match self
                .pipeline
                .face(&self.pipeline.load(path)?, FaceChoice::Primary)?
            {
                Ok(f) => faces.push((person.clone(), f.embedding)),
                Err(_) => skipped.push(path.clone()),
            }
            progress.step(1);
        }
        let (evaluation, positives, negatives) =
            facenet::eval::protocol::all_pairs(&faces, Distance::L2, far)?;
        let people = faces
            .iter()
            .map(|f| &f.0)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let (names, embs): (Vec<String>, Vec<Vec<f32>>) = faces.iter().cloned().unzip();
        let impostor = ImpostorTable::from_labelled(
            &embs,
            &names,
            &self.model.fingerprint,
            &format!("{} labelled photos (facenet calibrate)", faces.len()),
            facenet::eval::openset::TABLE_GRID,
        );
        // The cohort score's thresholds, where there are people enough to draw galleries of
        // ten and keep a quarter of them as strangers.
        progress.start("cohort thresholds", 1);
        let cohort = CohortThresholds::from_labelled(
            &names,
            &embs,
            (
                &self.model.fingerprint,
                &format!("galleries drawn from {people} labelled people (facenet calibrate)"),
            ),
            &facenet::eval::cohort::COHORT_SIZES,
            &facenet::eval::cohort::COHORT_TARGETS,
            (facenet::eval::cohort::COHORT_DRAWS, 3),
        );
        progress.step(1);
        Ok(Calibration {
            impostor,
            cohort: (!cohort.sizes.is_empty()).then_some(cohort),
            faces: faces.len(),
            people,
            positives,
            negatives,
            skipped,
            evaluation,
        })
    }
}

/// Are the faces of two photos (the face of each photo, [`FaceChoice::Primary`]) the same
/// person under `threshold`? A photo without a face is an error naming it (`labels`). The
/// one comparison of two photos of every front: [`Recognizer::verify_photos`] with a
/// gallery's threshold, Python's `FaceNet.verify` without a gallery.
pub fn verify_pair(
    pipeline: &FacePipeline,
    photos: [(&str, &RgbImage); 2],
    threshold: Threshold,
) -> Result<PairVerification> {
    let mut faces = Vec::with_capacity(2);
    for (label, img) in photos {
        let face = pipeline
            .face(img, FaceChoice::Primary)?
            .map_err(|why| no_face(label, why))?;
        faces.push(face);
    }
    let distance = facenet::Distance::L2.between(&faces[0].embedding, &faces[1].embedding);
    Ok(PairVerification {
        distance,
        threshold,
        verified: threshold.accepts(distance),
        bboxes: [0, 1].map(|i| faces[i].detection.map(|d| d.bbox)),
    })
}

/// The error of a photo (`label`) without the face asked for.
fn no_face(label: &str, why: NoFace) -> GalleryError {
    GalleryError::Facenet(facenet::Error::NoFace {
        path: label.into(),
        why,
    })
}

/// A face of the pipeline as the store keeps it.
fn new_face(source: String, face: Face) -> NewFace {
    NewFace {
        embedding: face.embedding,
        source,
        bbox: face.detection.map(|d| d.bbox),
    }
}

/// Embeds every face of the photos below `dir` and groups them by identity without labels:
/// `(path, face index, box, embedding)` per face, and a cluster label per face.
pub fn cluster_folder(
    pipeline: &FacePipeline,
    dir: &Path,
    threshold: f32,
    method: crate::cluster::Method,
) -> Result<(Vec<ClusteredFace>, Vec<usize>)> {
    let files = facenet::files::walk_images(dir)?;
    if files.is_empty() {
        return Err(GalleryError::Invalid(format!(
            "{}: no images",
            dir.display()
        )));
    }
    let mut faces = Vec::new();
    for f in &files {
        for (i, face) in pipeline.faces_in_file(f)?.into_iter().enumerate() {
            faces.push(ClusteredFace {
                path: f.clone(),
                face: i,
                bbox: face.detection.map(|d| d.bbox),
                embedding: face.embedding,
            });
        }
    }
    let points: Vec<Vec<f32>> = faces.iter().map(|f| f.embedding.clone()).collect();
    let labels = method.run(&points, threshold);
    Ok((faces, labels))
}

/// A face of [`cluster_folder`].
#[derive(Debug, Clone, Serialize)]
pub struct ClusteredFace {
    /// The photo.
    pub path: PathBuf,
    /// Face index in the photo.
    pub face: usize,
    /// Its box.
    #[serde(rename = "box")]
    pub bbox: Option<[f32; 4]>,
    /// Its embedding.
    #[serde(skip)]
    pub embedding: Vec<f32>,
}

/// One photo of a labelled folder, identified (the demo's and any one-shot evaluation's row).
#[derive(Debug, Clone)]
pub struct LabelledResult {
    /// The true identity (the folder's name).
    pub truth: String,
    /// The photo.
    pub path: PathBuf,
    /// The identification of its primary face; `None` when it has none.
    pub identification: Option<Identification>,
    /// The aligned face.
    pub crop: Option<RgbImage>,
}

impl Recognizer {
    /// Enrols the first `per_person` photos of each person of a labelled folder (all with
    /// 0), the primary face of each; photos without a face (or below the enrolment quality,
    /// [`Recognizer::with_min_quality`]) are skipped and returned with the reason.
    pub fn enroll_folder(&self, dir: &Path, per_person: usize) -> Result<Vec<(PathBuf, NoFace)>> {
        self.store.check_model(&self.model)?;
        let mut by_person: std::collections::BTreeMap<String, Vec<NewFace>> = Default::default();
        let mut skipped = Vec::new();
        for (person, path) in facenet::files::dataset_files(dir)? {
            let list = by_person.entry(person).or_default();
            if per_person > 0 && list.len() >= per_person {
                continue;
            }
            match self
                .pipeline
                .face(&self.pipeline.load(&path)?, FaceChoice::Primary)?
                .and_then(|f| self.gate(f))
            {
                Ok(face) => list.push(new_face(path.display().to_string(), face)),
                Err(why) => skipped.push((path, why)),
            }
        }
        for (person, faces) in by_person {
            if !faces.is_empty() {
                self.store.enroll(&person, &faces, &self.model)?;
            }
        }
        Ok(skipped)
    }

    /// Identifies the primary face of every photo of a labelled folder.
    pub fn identify_folder(&self, searcher: &Searcher, dir: &Path) -> Result<Vec<LabelledResult>> {
        facenet::files::dataset_files(dir)?
            .into_iter()
            .map(|(truth, path)| {
                let img = self.pipeline.load(&path)?;
                let (identification, crop) = match self.pipeline.face(&img, FaceChoice::Primary)? {
                    Ok(f) => (Some(searcher.identify(0, &f, 1)?), Some(f.crop)),
                    Err(_) => (None, None),
                };
                Ok(LabelledResult {
                    truth,
                    path,
                    identification,
                    crop,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Keras weights' fingerprint, which the shipped tables belong to.
    const KERAS: &str = "19afcc08829b1b270a50ecd4d1e0c0f73b9dde63965b3b6aa7c4cd28003c6166";

    /// Which score a gallery's identification thresholds: the cohort score from six people
    /// on, the distance below that, for an explicit threshold, and for a gallery with an
    /// impostor table of its own (`calibrate --store`).
    #[test]
    fn the_cohort_score_applies_where_it_should() {
        let plain = Settings::default();
        let rule = |scoring, explicit, settings: &Settings, n| {
            identification_threshold(scoring, (explicit, None), settings, KERAS, (n, n)).unwrap()
        };
        let t = rule(Scoring::Cohort, None, &plain, 100);
        assert_eq!(
            (t.scoring, t.source),
            (Scoring::Cohort, ThresholdSource::TargetFir)
        );
        assert!(t.value < 0.0 && t.expected_dir.is_some(), "{t:?}");
        // Mirror-averaged embeddings keep the plain ones' table.
        let m = identification_threshold(
            Scoring::Cohort,
            (None, None),
            &plain,
            &format!("{KERAS}+mirror"),
            (100, 100),
        )
        .unwrap();
        assert_eq!(m.scoring, Scoring::Cohort);
        assert_eq!(
            rule(Scoring::Cohort, None, &plain, 5).scoring,
            Scoring::Distance
        );
        assert_eq!(
            rule(Scoring::Distance, None, &plain, 100).scoring,
            Scoring::Distance
        );
        let given = rule(Scoring::Cohort, Some(0.9), &plain, 100);
        assert_eq!((given.value, given.scoring), (0.9, Scoring::Distance));
        // A table of the gallery's own people: the distance, by that table.
        let people: Vec<String> = (0..12).map(|i| format!("p{}", i / 2)).collect();
        let emb: Vec<Vec<f32>> = (0..12)
            .map(|i| vec![(i as f32).cos(), (i as f32).sin()])
            .collect();
        let own = Settings {
            impostor: Some(ImpostorTable::from_labelled(
                &emb,
                &people,
                KERAS,
                "own",
                facenet::eval::openset::TABLE_GRID,
            )),
            ..Settings::default()
        };
        let t = rule(Scoring::Cohort, None, &own, 100);
        assert_eq!(
            (t.scoring, t.source, t.own_table),
            (Scoring::Distance, ThresholdSource::TargetFir, true)
        );
        assert!(t.value > 0.0, "{t:?}");
        assert!(!rule(Scoring::Cohort, Some(0.9), &own, 100).own_table);
        // With a cohort table of its own people beside it: the cohort score, by that table
        // (the smallest size's threshold for a smaller gallery, the largest's beyond it).
        let table = CohortThresholds {
            fingerprint: KERAS.into(),
            source: "own".into(),
            k: COHORT_K,
            sizes: vec![10, 30],
            targets: vec![0.1, 0.01],
            thresholds: vec![vec![-0.25, -0.375], vec![-0.125, -0.25]],
            searches: vec![400, 400],
            dir: vec![vec![[0.9, 0.95], [0.5, 0.7]], vec![[0.8, 0.9], [0.4, 0.6]]],
        };
        let own = Settings {
            cohort: Some(table.clone()),
            ..own
        };
        for (n, want) in [(6, -0.375), (10, -0.375), (30, -0.25), (100, -0.25)] {
            let t = rule(Scoring::Cohort, None, &own, n);
            assert_eq!(
                (t.scoring, t.source, t.value, t.own_table),
                (Scoring::Cohort, ThresholdSource::TargetFir, want, true),
                "{n} identities"
            );
            assert!(
                t.describe().contains("own labelled photos"),
                "{}",
                t.describe()
            );
        }
        assert!(!rule(Scoring::Cohort, None, &plain, 30).own_table);
        // Between sizes: linear in the logarithm of the size.
        let mid = rule(Scoring::Cohort, None, &own, 17).value;
        let want = -0.375 + 0.125 * (17f64 / 10.0).ln() / 3f64.ln();
        assert!((mid as f64 - want).abs() < 1e-6, "{mid} vs {want}");
        // Its own target rate, and a mirror-averaged gallery of the same weights, read it too.
        let strict = identification_threshold(
            Scoring::Cohort,
            (None, Some(0.1)),
            &own,
            &format!("{KERAS}+mirror"),
            (30, 30),
        )
        .unwrap();
        assert_eq!((strict.scoring, strict.value), (Scoring::Cohort, -0.125));
        // Below six identities, with an explicit threshold or --score distance: the distance.
        assert_eq!(
            rule(Scoring::Cohort, None, &own, 5).scoring,
            Scoring::Distance
        );
        assert_eq!(rule(Scoring::Cohort, Some(0.9), &own, 30).value, 0.9);
        assert_eq!(
            rule(Scoring::Distance, None, &own, 30).scoring,
            Scoring::Distance
        );
        // A table of other weights is not used: for them, the distance by the own impostors.
        let foreign = Settings {
            cohort: Some(CohortThresholds {
                fingerprint: "another model".into(),
                ..table
            }),
            ..own
        };
        assert_eq!(
            rule(Scoring::Cohort, None, &foreign, 30).scoring,
            Scoring::Distance
        );
        // Another model's weights have no cohort table: the distance.
        let other = identification_threshold(
            Scoring::Cohort,
            (None, None),
            &plain,
            "another model",
            (100, 100),
        )
        .unwrap();
        assert_eq!(other.scoring, Scoring::Distance);
    }
}
