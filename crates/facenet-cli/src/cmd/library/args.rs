//! `facenet library`'s arguments.

use std::path::PathBuf;

use crate::common::{GalleryArgs, PipelineArgs};

/// `facenet library ...`.
#[derive(Debug, clap::Args)]
pub struct LibraryCmd {
    #[command(subcommand)]
    pub command: LibrarySub,
    #[command(flatten)]
    pub gallery: GalleryArgs,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum LibrarySub {
    /// Index photos (folders recursively): new photos are detected, embedded and grouped into
    /// people; known ones are skipped, moved ones keep their faces, deleted ones leave.
    Add {
        /// Folders or photos.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every person with face and photo counts.
    People {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// A person's faces (ids, photos, boxes, quality), best first.
    Faces {
        /// Person: id (`12` or `#12`) or name.
        person: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Name a person (or rename): they become a gallery identity, so `identify` knows them.
    Name {
        /// Person: id or current name.
        person: String,
        /// The name.
        name: String,
    },
    /// Merge people into the first.
    Merge {
        /// The person that stays.
        into: String,
        /// People merged into it.
        #[arg(required = true)]
        others: Vec<String>,
    },
    /// Move a face to another person (`new`: a person of its own), or to no one: it stays
    /// where you put it, and never goes back to the person it left.
    Move {
        /// Face id (`facenet library faces PERSON` lists them).
        face: i64,
        /// Person: id, name, or `new`.
        #[arg(long, required_unless_present = "nobody")]
        to: Option<String>,
        /// To no one ("not this person").
        #[arg(long, conflicts_with = "to")]
        nobody: bool,
    },
    /// Forget a person: their name (in the gallery too) and their faces' embeddings.
    Forget {
        /// Person: id or name.
        person: String,
    },
    /// Regroup every face you have not vouched for (names, moved faces and "not this person"
    /// are kept).
    Recluster,
    /// Photos with all these people, or containing this face.
    Find {
        /// Person (id or name); repeat for photos with all of them.
        #[arg(long, required_unless_present = "face", conflicts_with = "face")]
        person: Vec<String>,
        /// A photo of the face to look for (its main face).
        #[arg(long)]
        face: Option<PathBuf>,
        /// At most this many photos (by face).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// A contact sheet of a person's faces (best first).
    Sheet {
        /// Person: id or name.
        person: String,
        /// Output PNG.
        #[arg(short, long, default_value = "person.png")]
        output: PathBuf,
        /// At most this many faces.
        #[arg(long, default_value_t = 25)]
        max: usize,
    },
    /// Score the people against the truth of a labelled collection (each photo's folder is
    /// its person's name, as LFW): BCubed precision and recall, people merged and split;
    /// beside regrouping from scratch, in batches, `facenet cluster` and Immich's rule.
    Evaluate {
        /// The incremental replay's number of batches.
        #[arg(long, default_value_t = 10)]
        batches: usize,
        /// Score another join threshold (default: the impostor table's at the library's FAR).
        #[arg(long)]
        join: Option<f32>,
        /// Score another founding threshold.
        #[arg(long)]
        found: Option<f32>,
        /// Score another number of votes to join.
        #[arg(long)]
        votes: Option<usize>,
        /// Score another centroid threshold for faces without enough votes (0: none).
        #[arg(long)]
        centroid: Option<f32>,
        /// Score another threshold for merging a new person with another by their centroids
        /// (0: none).
        #[arg(long)]
        merge: Option<f32>,
        /// Also write the table as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}
