//! Evaluation support (feature `eval`): labelled documents, the Presidio-research dataset
//! loader with its label mapping, seeded generators of labelled clinical notes and of ICU
//! nursing notes, and the any-overlap scorer. Used by the crate's tests and by `phi-bench`; never by detection.

mod dataset;
mod notes;
mod nursing;
mod score;

pub use dataset::{load_presidio_research, map_presidio_label};
pub use notes::generate_notes;
pub use nursing::generate_nursing_notes;
pub use score::{CategoryScore, Report, score};

use serde::{Deserialize, Serialize};

use crate::Category;

/// What a gold span counts as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GoldLabel {
    /// PHI of this category: it must be found (recall) and detections over it are correct.
    Phi(Category),
    /// Labelled in the source but not PHI under Safe Harbor (an organisation, a job title, a
    /// nationality, a year alone, an age under 90…): not counted for recall, and a detection
    /// over it is neither right nor wrong. The string is the source label.
    Neutral(String),
}

/// A labelled span, byte offsets into the document text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gold {
    pub start: usize,
    pub end: usize,
    pub label: GoldLabel,
}

/// A labelled document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doc {
    pub text: String,
    pub gold: Vec<Gold>,
}

/// A detection to score: byte offsets and the detector's own label (ours are category names;
/// Presidio's are its entity types), which only groups the precision figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pred {
    pub start: usize,
    pub end: usize,
    pub label: String,
}

/// The byte offset of character `char_idx` in `text` (Python string indices count
/// characters); the text's length past the end.
pub fn char_to_byte(text: &str, char_idx: usize) -> usize {
    text.char_indices()
        .nth(char_idx)
        .map_or(text.len(), |(b, _)| b)
}

/// Our detections on `doc`, as [`Pred`]s.
pub fn predict(detector: &crate::Detector, text: &str) -> Vec<Pred> {
    detector
        .detect(text)
        .into_iter()
        .map(|s| Pred {
            start: s.start,
            end: s.end,
            label: s.category.name().to_owned(),
        })
        .collect()
}
