//! API key parsing: any text either fails to parse or is a canonical key whose printed form
//! hides the secret.

#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use wardgate_store::keys::{self, KEY_LEN, SECRET_B64_LEN, SECRET_BYTES};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(parsed) = keys::parse(text) else {
        return;
    };
    assert_eq!(text.len(), KEY_LEN);
    assert!(text.starts_with(keys::KEY_SCHEME));
    assert!(
        parsed
            .prefix()
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    );
    let secret = &text[KEY_LEN - SECRET_B64_LEN..];
    let bytes = URL_SAFE_NO_PAD
        .decode(secret)
        .expect("an accepted secret decodes");
    assert_eq!(bytes.len(), SECRET_BYTES);
    assert_eq!(
        URL_SAFE_NO_PAD.encode(&bytes),
        secret,
        "accepted a non-canonical secret"
    );
    assert!(
        !format!("{parsed:?}").contains(secret),
        "Debug shows the secret"
    );
});
