//! The detector on generated clinical notes (the `eval` feature, enabled for tests through
//! the crate's dev-dependency on itself): a floor under recall, precision and the leak rate,
//! so that a change that breaks a category shows up in `cargo test`, not only in the bench.

use wardgate_phi::Detector;
use wardgate_phi::eval::{generate_notes, predict, score};

#[test]
fn generated_notes_are_found_with_few_false_positives() {
    let docs = generate_notes(7, 120);
    let preds: Vec<_> = docs
        .iter()
        .map(|d| predict(Detector::shared(), &d.text))
        .collect();
    let r = score(&docs, &preds);
    assert!(r.recall() >= 0.97, "recall {:.3}", r.recall());
    assert!(r.precision() >= 0.95, "precision {:.3}", r.precision());
    assert!(r.leak_rate() <= 0.2, "leak rate {:.3}", r.leak_rate());
    for (cat, s) in &r.by_gold {
        let recall = s.recall().unwrap_or(1.0);
        assert!(recall >= 0.9, "{cat} recall {recall:.3}");
    }
}
