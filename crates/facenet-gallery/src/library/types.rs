//! The library's records: people, faces with their photos, photos.

use facenet::detect::Detection;
use serde::Serialize;

/// A person of the library.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Person {
    /// Id (stable while the person has faces).
    pub id: i64,
    /// Name, once given.
    pub name: Option<String>,
    /// Faces.
    pub faces: usize,
    /// Photos.
    pub photos: usize,
    /// Their best face by quality (a thumbnail for the person).
    pub cover: Option<i64>,
}

impl Person {
    /// The name, or `#id`.
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| format!("#{}", self.id))
    }
}

/// A stored face with its photo.
#[derive(Debug, Clone, Serialize)]
pub struct LibraryFace {
    /// Face id.
    pub id: i64,
    /// Photo id.
    pub photo: i64,
    /// Photo path.
    pub path: String,
    /// Index in the photo (0: the face of the photo).
    pub index: usize,
    /// Box.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Detector confidence.
    pub score: f32,
    /// Five landmarks.
    pub landmarks: [[f32; 2]; 5],
    /// Quality (0..1).
    pub quality: f32,
    /// Embedding (empty once forgotten).
    #[serde(skip)]
    pub embedding: Vec<f32>,
    /// Person.
    pub person: Option<i64>,
    /// Placed by the user.
    pub pinned: bool,
}

impl LibraryFace {
    /// The detection it came from.
    pub fn detection(&self) -> Detection {
        Detection {
            bbox: self.bbox,
            score: self.score,
            landmarks: self.landmarks,
        }
    }
}

/// A photo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhotoRow {
    /// Id.
    pub id: i64,
    /// Path.
    pub path: String,
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
}
