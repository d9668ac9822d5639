//! The any-overlap scorer, the same for every detector compared.
//!
//! - Recall of a category: the share of its gold spans that some detection overlaps by at
//!   least one byte, whatever the detection's label (what matters for de-identification is
//!   that the bytes are covered).
//! - Precision of a detector label: the share of its detections that overlap a PHI gold span;
//!   a detection that overlaps only neutral spans (organisations, years, …) is left out of
//!   precision, one that overlaps no gold span is a false positive.
//! - Document leak rate: the share of documents with PHI in which some PHI span is not
//!   overlapped at all.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Doc, GoldLabel, Pred};
use crate::Category;

/// Counts for one category (recall side) or one detector label (precision side).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CategoryScore {
    /// Gold PHI spans of the category.
    pub gold: usize,
    /// Of those, overlapped by a detection.
    pub found: usize,
    /// Detections with this label that overlap a PHI span.
    pub true_pos: usize,
    /// Detections with this label that overlap no gold span at all.
    pub false_pos: usize,
    /// Detections with this label that overlap only neutral spans.
    pub neutral: usize,
}

impl CategoryScore {
    /// `found / gold`, or `None` without gold spans.
    pub fn recall(&self) -> Option<f64> {
        (self.gold > 0).then(|| self.found as f64 / self.gold as f64)
    }
    /// `true_pos / (true_pos + false_pos)`, or `None` without scored detections.
    pub fn precision(&self) -> Option<f64> {
        let n = self.true_pos + self.false_pos;
        (n > 0).then(|| self.true_pos as f64 / n as f64)
    }
}

/// The scores of one detector on one set of documents.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Recall side, by gold category name.
    pub by_gold: BTreeMap<String, CategoryScore>,
    /// Precision side, by the detector's label.
    pub by_pred: BTreeMap<String, CategoryScore>,
    pub gold: usize,
    pub found: usize,
    pub true_pos: usize,
    pub false_pos: usize,
    pub neutral: usize,
    pub docs_with_phi: usize,
    pub docs_leaking: usize,
}

impl Report {
    pub fn recall(&self) -> f64 {
        if self.gold == 0 {
            1.0
        } else {
            self.found as f64 / self.gold as f64
        }
    }
    pub fn precision(&self) -> f64 {
        let n = self.true_pos + self.false_pos;
        if n == 0 {
            1.0
        } else {
            self.true_pos as f64 / n as f64
        }
    }
    pub fn leak_rate(&self) -> f64 {
        if self.docs_with_phi == 0 {
            0.0
        } else {
            self.docs_leaking as f64 / self.docs_with_phi as f64
        }
    }
    /// Recall of a gold category, if it has gold spans.
    pub fn recall_of(&self, c: Category) -> Option<f64> {
        self.by_gold.get(c.name()).and_then(CategoryScore::recall)
    }
}

fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// Scores `preds[i]` against `docs[i]`.
pub fn score(docs: &[Doc], preds: &[Vec<Pred>]) -> Report {
    let mut r = Report::default();
    for (doc, ps) in docs.iter().zip(preds) {
        let mut leaking = false;
        let mut has_phi = false;
        for g in &doc.gold {
            let GoldLabel::Phi(c) = g.label else { continue };
            has_phi = true;
            let hit = ps
                .iter()
                .any(|p| overlaps((p.start, p.end), (g.start, g.end)));
            let e = r.by_gold.entry(c.name().to_owned()).or_default();
            e.gold += 1;
            r.gold += 1;
            if hit {
                e.found += 1;
                r.found += 1;
            } else {
                leaking = true;
            }
        }
        if has_phi {
            r.docs_with_phi += 1;
            if leaking {
                r.docs_leaking += 1;
            }
        }
        for p in ps {
            let mut phi = false;
            let mut neutral = false;
            for g in &doc.gold {
                if overlaps((p.start, p.end), (g.start, g.end)) {
                    match g.label {
                        GoldLabel::Phi(_) => phi = true,
                        GoldLabel::Neutral(_) => neutral = true,
                    }
                }
            }
            let e = r.by_pred.entry(p.label.clone()).or_default();
            if phi {
                e.true_pos += 1;
                r.true_pos += 1;
            } else if neutral {
                e.neutral += 1;
                r.neutral += 1;
            } else {
                e.false_pos += 1;
                r.false_pos += 1;
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::super::Gold;
    use super::*;

    #[test]
    fn any_overlap_counts_neutral_apart_and_leaks_by_document() {
        let doc = |gold: Vec<Gold>| Doc {
            text: "x".repeat(100),
            gold,
        };
        let g = |start, end, label| Gold { start, end, label };
        let p = |start, end| Pred {
            start,
            end,
            label: "PERSON".into(),
        };
        let docs = vec![
            doc(vec![
                g(0, 10, GoldLabel::Phi(Category::Person)),
                g(20, 30, GoldLabel::Neutral("ORGANIZATION".into())),
                g(40, 50, GoldLabel::Phi(Category::Phone)),
            ]),
            doc(vec![g(0, 5, GoldLabel::Phi(Category::Person))]),
        ];
        let preds = vec![vec![p(9, 12), p(25, 26), p(60, 61)], vec![p(0, 5)]];
        let r = score(&docs, &preds);
        assert_eq!((r.gold, r.found), (3, 2));
        assert_eq!((r.true_pos, r.false_pos, r.neutral), (2, 1, 1));
        assert_eq!((r.docs_with_phi, r.docs_leaking), (2, 1));
        assert_eq!(r.recall_of(Category::Person), Some(1.0));
        assert_eq!(r.recall_of(Category::Phone), Some(0.0));
        assert!((r.precision() - 2.0 / 3.0).abs() < 1e-9);
    }
}
