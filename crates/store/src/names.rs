//! Validation of the names and labels callers hand to the stores (tenants, models, key labels).
//!
//! Messages say what is allowed and never echo the rejected value: a bad value may be anything a
//! client typed, and error text can reach logs.

use crate::StoreError;

/// Longest tenant or model name accepted.
pub const MAX_NAME_LEN: usize = 64;
/// Most model names one key may be scoped to.
pub const MAX_MODELS_PER_KEY: usize = 256;
/// Longest key label accepted, in characters.
pub const MAX_LABEL_LEN: usize = 128;

/// A tenant name: 1 to 64 characters of `a-z`, `0-9`, `_`, `-`.
pub fn validate_tenant(name: &str) -> Result<(), StoreError> {
    let ok = (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "tenant name must be 1 to {MAX_NAME_LEN} characters of a-z, 0-9, '_' or '-'"
        )))
    }
}

/// A model name: 1 to 64 characters of `A-Z`, `a-z`, `0-9`, `.`, `_`, `:`, `-`, `/`.
///
/// `/` is allowed because OpenAI-API servers such as vLLM name models after their repository
/// (`meta-llama/Llama-3.1-8B-Instruct`) and Ollama names may carry a namespace (`library/llama3`).
pub fn validate_model(name: &str) -> Result<(), StoreError> {
    let ok = (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "model name must be 1 to {MAX_NAME_LEN} characters of A-Z, a-z, 0-9, '.', '_', ':', '-' or '/'"
        )))
    }
}

/// The model scope of a key: at most [`MAX_MODELS_PER_KEY`] valid names. Duplicates are dropped,
/// keeping the first occurrence, so the stored list says each model once.
pub fn normalize_models(models: Vec<String>) -> Result<Vec<String>, StoreError> {
    if models.len() > MAX_MODELS_PER_KEY {
        return Err(StoreError::Invalid(format!(
            "a key may name at most {MAX_MODELS_PER_KEY} models"
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(models.len());
    for model in models {
        validate_model(&model)?;
        if !out.contains(&model) {
            out.push(model);
        }
    }
    Ok(out)
}

/// A key label: 1 to 128 characters, none of them control characters (labels are printed in
/// listings and logs, where a newline or escape sequence could forge output). Labels are for
/// operators ("ci runner", "billing service"); they must not carry PHI.
pub fn validate_label(label: &str) -> Result<(), StoreError> {
    let chars = label.chars().count();
    let ok = (1..=MAX_LABEL_LEN).contains(&chars) && !label.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "label must be 1 to {MAX_LABEL_LEN} characters with no control characters"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names() {
        let long = "a".repeat(MAX_NAME_LEN);
        let too_long = "a".repeat(MAX_NAME_LEN + 1);
        let cases: &[(&str, bool)] = &[
            ("acme", true),
            ("acme-health_2", true),
            (&long, true),
            ("", false),
            (&too_long, false),
            ("Acme", false),
            ("acme corp", false),
            ("acme.corp", false),
            ("acme/../x", false),
            ("acmé", false),
            ("acme\0", false),
            ("acme\n", false),
        ];
        for (name, ok) in cases {
            assert_eq!(validate_tenant(name).is_ok(), *ok, "tenant {name:?}");
        }
    }

    #[test]
    fn model_names() {
        let cases: &[(&str, bool)] = &[
            ("llama3.1:8b", true),
            ("meta-llama/Llama-3.1-8B-Instruct", true),
            ("nomic-embed-text", true),
            ("", false),
            ("llama 3", false),
            ("llama3,mistral", false),
            ("llama3'; DROP TABLE api_keys; --", false),
            ("modèle", false),
        ];
        for (name, ok) in cases {
            assert_eq!(validate_model(name).is_ok(), *ok, "model {name:?}");
        }
        assert!(validate_model(&"m".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn models_are_deduplicated_in_order() {
        let models = ["b", "a", "b"].map(String::from).to_vec();
        assert!(matches!(normalize_models(models), Ok(m) if m == ["b", "a"]));
        let too_many = (0..=MAX_MODELS_PER_KEY).map(|i| format!("m{i}")).collect();
        assert!(normalize_models(too_many).is_err());
    }

    #[test]
    fn labels() {
        let cases: &[(&str, bool)] = &[
            ("ci runner", true),
            ("Überweisung – billing", true),
            ("", false),
            ("line\nbreak", false),
            ("esc\u{1b}[31m", false),
        ];
        for (label, ok) in cases {
            assert_eq!(validate_label(label).is_ok(), *ok, "label {label:?}");
        }
        assert!(validate_label(&"é".repeat(MAX_LABEL_LEN)).is_ok());
        assert!(validate_label(&"é".repeat(MAX_LABEL_LEN + 1)).is_err());
    }

    #[test]
    fn messages_do_not_echo_the_value() {
        let Err(StoreError::Invalid(msg)) = validate_tenant("Secret Patient Name") else {
            panic!("expected Invalid");
        };
        assert!(!msg.contains("Patient"), "{msg}");
    }
}
