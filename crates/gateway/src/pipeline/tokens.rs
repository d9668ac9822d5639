//! Token counting for the context-window check. The gateway does not hold model tokenizers
//! yet, so it uses a documented conservative estimate: one token per three UTF-8 bytes of text
//! (English averages about four characters a token, so this overestimates by about a third),
//! plus four tokens of chat-template overhead per message and three to prime the reply. A
//! request the estimate lets through will fit; one it refuses is close to the limit anyway.

use wardgate_api::canonical::Message;

pub fn estimate_text(s: &str) -> u64 {
    (s.len() as u64).div_ceil(3)
}

pub fn estimate_messages(messages: &[Message]) -> u64 {
    3 + messages
        .iter()
        .map(|m| {
            4 + estimate_text(&m.content)
                + m.tool_calls
                    .iter()
                    .map(|c| estimate_text(&c.name) + estimate_text(&c.arguments))
                    .sum::<u64>()
        })
        .sum::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wardgate_api::canonical::Role;

    #[test]
    fn estimate_is_conservative_for_english() {
        // "What is the capital of France?" is 7 tokens for Llama-family tokenizers.
        assert!(estimate_text("What is the capital of France?") >= 7);
        assert_eq!(estimate_text(""), 0);
        let m = [Message::new(Role::User, "abc")];
        assert_eq!(estimate_messages(&m), 3 + 4 + 1);
    }
}
