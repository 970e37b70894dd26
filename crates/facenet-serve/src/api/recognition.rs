//! Recognition: `/verify` and `/identify`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use facenet_gallery::{Identification, Scoring, Threshold, check_rate, check_threshold};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Errors;
use super::faces::{QualityOut, decode};
use crate::error::ApiError;
use crate::input::{Images, ImagesForm, ImagesJson, Query};
use crate::{AppState, Tenant};

/// Parameters of `/verify`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VerifyParams {
    /// Compare the one image with this enrolled subject (else: send two images).
    pub subject: Option<String>,
    /// Decision threshold, L2 between unit embeddings in (0, 2]; default: the gallery's 1:1
    /// threshold (calibrated, else for a false accept rate of 1e-3).
    pub threshold: Option<f32>,
}

/// A 1:1 decision.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerifyResponse {
    /// `distance <= threshold`.
    pub verified: bool,
    /// L2 distance between the unit embeddings.
    pub distance: f32,
    /// Always `euclidean_l2`.
    pub distance_metric: String,
    /// The distance's unit and range.
    pub unit: String,
    /// The threshold that decided.
    pub threshold: f32,
    /// Where it came from: `explicit`, `calibrated`, `target-far`, `default`.
    pub threshold_source: String,
    /// The threshold's rule in words.
    pub threshold_detail: String,
    /// The model: `facenet` and its weights' fingerprint.
    pub model: String,
    /// The subject compared with, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The faces compared, `[x1, y1, x2, y2]` (one for a subject).
    pub facial_areas: Vec<Vec<f32>>,
}

const UNIT: &str = "L2 distance between unit-length embeddings, 0 (same) to 2";

fn model_name(t: &Tenant) -> String {
    format!("facenet/{}", t.recognizer.model().short())
}

/// Are two photos the same person, or is a photo the enrolled subject?
#[utoipa::path(post, path = "/api/v1/verify", tag = "recognition", params(VerifyParams),
    request_body(content((ImagesForm = "multipart/form-data"), (ImagesJson = "application/json"))),
    responses((status = 200, body = VerifyResponse), Errors), security(("api_key" = [])))]
pub(crate) async fn verify(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    Query(q): Query<VerifyParams>,
    images: Images,
) -> Result<Json<VerifyResponse>, ApiError> {
    check_threshold(q.threshold)?;
    let want = if q.subject.is_some() { 1 } else { 2 };
    if images.0.len() != want {
        return Err(ApiError::bad_request(match &q.subject {
            Some(s) => format!(
                "verify with subject `{s}`: send one image, got {}",
                images.0.len()
            ),
            None => format!(
                "verify: send two images (or one and ?subject=NAME), got {}",
                images.0.len()
            ),
        }));
    }
    let p = s.pipeline.clone();
    s.work_decoding(images.total_pixels(), move || {
        let model = model_name(&t);
        let r = &t.recognizer;
        let answer = |distance, threshold: Threshold, verified, subject, areas| VerifyResponse {
            verified,
            distance,
            distance_metric: "euclidean_l2".into(),
            unit: UNIT.into(),
            threshold: threshold.value,
            threshold_source: threshold.source.name().into(),
            threshold_detail: threshold.describe(),
            model,
            subject,
            facial_areas: areas,
        };
        let first = decode(&p, &images.0[0])?;
        match q.subject {
            Some(name) => {
                let v = r.verify(&first, &name, q.threshold)?.ok_or_else(|| {
                    ApiError::bad_request(format!("{}: no face found", images.0[0].label))
                })?;
                let areas = v.bbox.map(|b| b.to_vec()).into_iter().collect();
                Ok(Json(answer(
                    v.distance,
                    v.threshold,
                    v.verified,
                    Some(name),
                    areas,
                )))
            }
            None => {
                let second = decode(&p, &images.0[1])?;
                let v = r.verify_photos(
                    [(&images.0[0].label, &first), (&images.0[1].label, &second)],
                    q.threshold,
                )?;
                let areas = v.bboxes.iter().flatten().map(|b| b.to_vec()).collect();
                Ok(Json(answer(
                    v.distance,
                    v.threshold,
                    v.verified,
                    None,
                    areas,
                )))
            }
        }
    })
    .await
}

/// Parameters of `/identify`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct IdentifyParams {
    /// Candidates per face, 1 to 20 (default 1).
    pub top_k: Option<usize>,
    /// Decision threshold, L2 in (0, 2]; default: derived for the target false-identification
    /// rate and this gallery's size.
    pub threshold: Option<f32>,
    /// Target false-identification rate in (0, 1) (default: the gallery's, else 0.01).
    pub fir: Option<f64>,
    /// What the derived threshold applies to: `cohort` (default: the distance less how close
    /// the subject sits to their 5 nearest other subjects; galleries of 6 subjects and more)
    /// or `distance`.
    #[param(value_type = Option<String>)]
    pub score: Option<Scoring>,
}

/// A candidate subject.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Candidate {
    /// Subject name.
    pub subject: String,
    /// L2 distance (to the subject's centroid of faces).
    pub distance: f32,
}

/// One face, identified.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IdentifiedFace {
    /// `[x1, y1, x2, y2]` in pixels.
    #[serde(rename = "box")]
    pub bbox: Vec<f32>,
    /// Detector probability.
    pub score: f32,
    /// How usable the face is for recognition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualityOut>,
    /// The best subject within the threshold, or `unknown`.
    pub subject: String,
    /// Whether `subject` is a gallery member (`false`: `unknown`).
    pub known: bool,
    /// Distance to the best candidate (even when over the threshold); absent for an empty
    /// gallery.
    pub distance: Option<f32>,
    /// The best candidate's cohort score, when the threshold applies to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort_score: Option<f32>,
    /// The best `top_k` candidates, nearest first.
    pub candidates: Vec<Candidate>,
}

/// The faces of one image, identified.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IdentifiedImage {
    /// Position of the image in the request.
    pub index: usize,
    /// Its file name, or `images[i]`.
    pub name: String,
    /// Faces, the face of the photo first (the order of every front).
    pub faces: Vec<IdentifiedFace>,
}

/// Identification results.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IdentifyResponse {
    /// The threshold applied.
    pub threshold: f32,
    /// Where it came from: `explicit`, `target-fir`, `default`.
    pub threshold_source: String,
    /// The threshold's rule in words.
    pub threshold_detail: String,
    /// The expected share of strangers named as someone at this threshold, when known.
    pub expected_fir: Option<f64>,
    /// What the threshold applies to: `cohort` (each face's `cohort_score`) or `distance`.
    pub scoring: String,
    /// The distance's unit.
    pub unit: String,
    /// One entry per image.
    pub images: Vec<IdentifiedImage>,
}

fn identified(i: Identification) -> IdentifiedFace {
    IdentifiedFace {
        bbox: i.bbox.map_or_else(Vec::new, |b| b.to_vec()),
        score: i.score.unwrap_or(1.0),
        quality: i.quality.map(Into::into),
        subject: i.identity.name().to_string(),
        known: i.identity.is_known(),
        distance: i.distance,
        cohort_score: i.cohort_score,
        candidates: i
            .candidates
            .into_iter()
            .map(|m| Candidate {
                subject: m.identity,
                distance: m.distance,
            })
            .collect(),
    }
}

/// Who is in these photos? Per face the best subjects, and `unknown` above the threshold.
#[utoipa::path(post, path = "/api/v1/identify", tag = "recognition", params(IdentifyParams),
    request_body(content((ImagesForm = "multipart/form-data"), (ImagesJson = "application/json"))),
    responses((status = 200, body = IdentifyResponse), Errors), security(("api_key" = [])))]
pub(crate) async fn identify(
    State(s): State<Arc<AppState>>,
    t: Tenant,
    Query(q): Query<IdentifyParams>,
    images: Images,
) -> Result<Json<IdentifyResponse>, ApiError> {
    check_threshold(q.threshold)?;
    if let Some(f) = q.fir {
        check_rate(f)?;
    }
    let top_k = q.top_k.unwrap_or(1);
    if !(1..=20).contains(&top_k) {
        return Err(ApiError::bad_request(format!("top_k {top_k}: use 1 to 20")));
    }
    let p = s.pipeline.clone();
    s.work_decoding(images.peak_pixels(), move || {
        let recognizer = match q.score {
            Some(scoring) => t.recognizer.clone().with_scoring(scoring),
            None => t.recognizer.clone(),
        };
        let searcher = recognizer.searcher(q.threshold, q.fir)?;
        let th = searcher.threshold();
        let mut out = Vec::new();
        for (index, u) in images.0.iter().enumerate() {
            let img = decode(&p, u)?;
            let faces = recognizer.identify(&searcher, &img, top_k)?;
            out.push(IdentifiedImage {
                index,
                name: u.label.clone(),
                faces: faces.into_iter().map(identified).collect(),
            });
        }
        Ok(Json(IdentifyResponse {
            threshold: th.value,
            threshold_source: th.source.name().into(),
            threshold_detail: th.describe(),
            expected_fir: th.expected_fir,
            scoring: th.scoring.name().into(),
            unit: UNIT.into(),
            images: out,
        }))
    })
    .await
}
