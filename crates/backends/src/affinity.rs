//! Conversation affinity: the key that keeps the turns of one conversation on one replica, and
//! the rendezvous (highest random weight) hash that maps a key to a replica.
//!
//! The key is a hash of the part of a request that the next turn repeats unchanged: for a chat,
//! every message up to and including the first user message (the system prompt, and the
//! tools, which templates render into it), so turn 2 (the same opening plus more history) hashes
//! like turn 1 (each message's first [`MESSAGE_PREFIX_BYTES`] bytes); for a completion, the system prompt and the first [`COMPLETION_PREFIX_BYTES`]
//! bytes of the prompt. The hash is FNV-1a, a fixed function, so every gateway instance (and
//! every release) maps a conversation to the same replica.
//!
//! The key also hashes the request's scope (the gateway passes the tenant) ahead of the rest,
//! so the same opening sent by two tenants gets two unrelated keys: each tenant's turns stay on
//! one replica, but a tenant cannot tell, or choose, which replica holds another tenant's
//! conversation, and so cannot aim prompt-cache timing probes at it.
//!
//! Rendezvous hashing scores each replica by mixing the key with the replica's own identity
//! and picks the highest score. Removing a replica moves only the conversations that were on it
//! (each to its second-highest score), and adding one takes about 1/n of the conversations from
//! the others, with no table to share between gateway instances.

use wardgate_api::canonical::{ChatRequest, CompletionRequest, Role};

/// How much of a completion's prompt is its conversation key. A completion has no turns to
/// find the opening in; its prompt's start (a template header, a system text, the first
/// exchange) is what a continuation repeats. A prompt shorter than this is hashed whole, so a
/// conversation that starts with a short prompt may change replica once on its second turn.
pub const COMPLETION_PREFIX_BYTES: usize = 512;

/// How much of each chat message is hashed. Two openings that agree on this much of every
/// message share that much KV prefix anyway, and a bound keeps the hash cheap for a first
/// message that is a whole document.
pub const MESSAGE_PREFIX_BYTES: usize = 4096;

/// The conversation key of a chat in `scope`: `None` when it has no messages.
pub fn chat_key(scope: &str, req: &ChatRequest) -> Option<u64> {
    let first_user = req.messages.iter().position(|m| m.role == Role::User);
    let opening = match first_user {
        Some(i) => &req.messages[..=i],
        None => &req.messages[..],
    };
    if opening.is_empty() {
        return None;
    }
    let mut h = Fnv::new();
    h.field(scope.as_bytes());
    for m in opening {
        h.field(m.role.as_str().as_bytes());
        h.field(head(&m.content));
        for image in &m.images {
            h.field(head(image));
        }
    }
    for tool in &req.tools {
        h.field(head(tool.get()));
    }
    Some(h.finish())
}

/// The first [`MESSAGE_PREFIX_BYTES`] bytes of `text`.
fn head(text: &str) -> &[u8] {
    &text.as_bytes()[..text.len().min(MESSAGE_PREFIX_BYTES)]
}

/// The conversation key of a completion in `scope`: `None` for an empty prompt.
pub fn completion_key(scope: &str, req: &CompletionRequest) -> Option<u64> {
    if req.prompt.is_empty() {
        return None;
    }
    let prompt = req.prompt.as_bytes();
    let mut h = Fnv::new();
    h.field(scope.as_bytes());
    h.field(head(req.system.as_deref().unwrap_or_default()));
    h.field(&prompt[..prompt.len().min(COMPLETION_PREFIX_BYTES)]);
    Some(h.finish())
}

/// A replica's identity for rendezvous hashing: stable across restarts and config edits that
/// leave its URL alone.
pub fn replica_id(identity: &str) -> u64 {
    let mut h = Fnv::new();
    h.field(identity.as_bytes());
    mix(h.finish())
}

/// The rendezvous weight of `replica` for `key`: the replica with the highest weight serves
/// the conversation.
pub fn weight(key: u64, replica: u64) -> u64 {
    // FNV's output is not mixed well enough to compare directly; a 64-bit finaliser
    // (splitmix64's) makes every bit of key and replica move every bit of the weight.
    mix(key ^ replica)
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 64-bit FNV-1a over length-prefixed fields, so that ("ab", "c") and ("a", "bc") differ.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn field(&mut self, bytes: &[u8]) {
        self.bytes(&(bytes.len() as u64).to_le_bytes());
        self.bytes(bytes);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_support::chat;

    #[test]
    fn the_turns_of_a_chat_share_a_key_and_other_chats_do_not() {
        let turn1 = chat(&[(Role::System, "be brief"), (Role::User, "hello")]);
        let turn2 = chat(&[
            (Role::System, "be brief"),
            (Role::User, "hello"),
            (Role::Assistant, "hi"),
            (Role::User, "and now?"),
        ]);
        assert_eq!(chat_key("t", &turn1), chat_key("t", &turn2));
        let other_user = chat(&[(Role::System, "be brief"), (Role::User, "hello!")]);
        let other_system = chat(&[(Role::System, "be long"), (Role::User, "hello")]);
        assert_ne!(chat_key("t", &turn1), chat_key("t", &other_user));
        assert_ne!(chat_key("t", &turn1), chat_key("t", &other_system));
        assert_eq!(chat_key("t", &chat(&[])), None);
        // A document as the first message: only its head is hashed.
        let doc = "d".repeat(MESSAGE_PREFIX_BYTES);
        assert_eq!(
            chat_key("t", &chat(&[(Role::User, &format!("{doc} one"))])),
            chat_key("t", &chat(&[(Role::User, &format!("{doc} two"))]))
        );
        // The split between fields counts, not only the bytes.
        assert_ne!(
            chat_key("t", &chat(&[(Role::System, "ab"), (Role::User, "c")])),
            chat_key("t", &chat(&[(Role::System, "a"), (Role::User, "bc")]))
        );
    }

    #[test]
    fn a_completion_is_keyed_by_its_prompt_prefix() {
        let long = "x".repeat(COMPLETION_PREFIX_BYTES);
        let req = |prompt: String| CompletionRequest {
            model: "m".into(),
            prompt,
            suffix: None,
            system: None,
            raw: false,
            sampling: Default::default(),
            format: Default::default(),
            keep_alive: None,
            fairness: None,
        };
        assert_eq!(
            completion_key("t", &req(format!("{long} turn one"))),
            completion_key("t", &req(format!("{long} turn one, answer, turn two")))
        );
        assert_ne!(
            completion_key("t", &req("a".into())),
            completion_key("t", &req("b".into()))
        );
        assert_eq!(completion_key("t", &req(String::new())), None);
    }

    #[test]
    fn two_tenants_place_the_same_conversation_independently_and_each_keeps_its_own() {
        let replicas: Vec<u64> = ["a", "b", "c"].iter().map(|r| replica_id(r)).collect();
        let home = |key: Option<u64>| {
            let key = key.unwrap_or_default();
            replicas.iter().copied().max_by_key(|&r| weight(key, r))
        };
        const N: usize = 3000;
        let mut differ = 0;
        for i in 0..N {
            let case = format!("case {i}");
            let opening = [(Role::System, "be brief"), (Role::User, case.as_str())];
            let turn2 = chat(&[
                opening[0],
                opening[1],
                (Role::Assistant, "ok"),
                (Role::User, "more"),
            ]);
            let (a, b) = (
                chat_key("acme", &chat(&opening)),
                chat_key("zeta", &chat(&opening)),
            );
            assert_eq!(a, chat_key("acme", &turn2), "a tenant's turns share a key");
            if home(a) != home(b) {
                differ += 1;
            }
        }
        // Independent choices among three replicas differ 2/3 of the time: 2000 ± 26 (one
        // sigma) of 3000; an unsalted key would make them differ never.
        assert!((1850..=2150).contains(&differ), "{differ} of {N} differ");
    }

    #[test]
    fn rendezvous_moves_only_the_keys_of_a_removed_replica() {
        let replicas: Vec<u64> = ["a", "b", "c"].iter().map(|r| replica_id(r)).collect();
        let best = |set: &[u64], key: u64| {
            set.iter()
                .copied()
                .max_by_key(|&r| weight(key, r))
                .unwrap_or_default()
        };
        let mut counts = [0usize; 3];
        for key in 0..3000u64 {
            let k = mix(key);
            let all = best(&replicas, k);
            let without_c = best(&replicas[..2], k);
            if all != replicas[2] {
                assert_eq!(all, without_c, "a key not on the removed replica stays");
            }
            counts[replicas.iter().position(|&r| r == all).unwrap_or(0)] += 1;
        }
        for c in counts {
            assert!((800..=1200).contains(&c), "{counts:?}");
        }
    }
}
