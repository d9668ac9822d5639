//! Properties of request parsing, the way the gateway parses bodies (`serde_json::from_slice`
//! into the front's request type, then `into_canonical`):
//! - arbitrary bytes, and valid bodies with a byte changed or cut short, never panic;
//! - nesting past serde_json's recursion limit (128) is refused with an error wherever it is
//!   parsed, and skipped without recursion in fields the types ignore, never a stack overflow;
//! - a neutral request written by a backend writer (`backend_*_body`) and parsed by the same
//!   protocol's front comes back equal: the two sides agree on every field they both carry.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use wardgate_api::canonical::{
    ChatRequest, CompletionRequest, EmbedRequest, Message, RawJson, ResponseFormat, Role, Sampling,
    ToolCall,
};
use wardgate_api::{ollama, openai};

/// Parses `body` as every front request type the gateway accepts and converts what parses.
fn parse_everything(body: &[u8]) {
    fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
        serde_json::from_slice::<T>(body).ok()
    }
    if let Some(r) = parse::<openai::ChatCompletionRequest>(body) {
        let _ = (r.wants_stream(), r.include_usage());
        let _ = r.into_canonical();
    }
    if let Some(r) = parse::<openai::CompletionRequestIn>(body) {
        let _ = r.into_canonical();
    }
    if let Some(r) = parse::<openai::EmbeddingRequestIn>(body) {
        let _ = r.encoding();
        let _ = r.into_canonical();
    }
    if let Some(r) = parse::<ollama::ChatRequestIn>(body) {
        let _ = r.into_canonical();
    }
    if let Some(r) = parse::<ollama::GenerateRequestIn>(body) {
        let _ = r.into_canonical();
    }
    if let Some(r) = parse::<ollama::EmbedRequestIn>(body) {
        let _ = r.into_canonical();
    }
    let _ = parse::<ollama::EmbeddingsRequestIn>(body);
    if let Some(r) = parse::<ollama::ShowRequestIn>(body) {
        let _ = r.model();
    }
}

// ---------------------------------------------------------------------------------------------
// Generators of neutral requests, limited to what each protocol carries.

/// Small JSON values without floats: serde_json's default float parsing may differ from the
/// written value in the last bit, which no request field depends on.
fn small_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-zé \"\\\\]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn small_object() -> impl Strategy<Value = Value> {
    proptest::collection::btree_map("[a-z_]{1,6}", small_json(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()))
}

/// Decimal settings as clients send them (two places).
fn setting() -> impl Strategy<Value = Option<f64>> {
    proptest::option::of((-200i32..=200).prop_map(|x| f64::from(x) / 100.0))
}

fn tool_call() -> impl Strategy<Value = ToolCall> {
    (
        "call_[a-z0-9]{1,8}",
        "[a-z_]{1,10}",
        // Arguments as a client's JSON text: a compact object (Ollama carries objects, so a
        // spaced-out text would come back compacted) or plain text that is not an object.
        prop_oneof![small_object().prop_map(|v| v.to_string()), "[a-z]{1,8}"],
    )
        .prop_map(|(id, name, arguments)| ToolCall {
            id,
            name,
            arguments,
        })
}

/// One message of a conversation; `tool_names` says whether the protocol carries a tool
/// result's function name (Ollama does, the OpenAI backend body does not).
fn message(tool_names: bool) -> impl Strategy<Value = Message> {
    let content = any::<String>;
    prop_oneof![
        content().prop_map(|c| Message::new(Role::System, c)),
        (
            content(),
            proptest::collection::vec("[A-Za-z0-9+/]{4,16}={0,2}", 0..3)
        )
            .prop_map(|(c, images)| Message {
                images,
                ..Message::new(Role::User, c)
            }),
        (
            prop_oneof![Just(String::new()), content()],
            proptest::collection::vec(tool_call(), 0..3)
        )
            .prop_map(|(c, tool_calls)| Message {
                tool_calls,
                ..Message::new(Role::Assistant, c)
            }),
        (
            content(),
            "call_[a-z0-9]{1,8}",
            proptest::option::of("[a-z_]{1,10}")
        )
            .prop_map(move |(c, id, name)| Message {
                tool_call_id: Some(id),
                tool_name: name.filter(|_| tool_names),
                ..Message::new(Role::Tool, c)
            }),
    ]
}

fn openai_sampling(max_tokens: BoxedStrategy<Option<u32>>) -> impl Strategy<Value = Sampling> {
    (
        setting(),
        setting(),
        any::<Option<i64>>(),
        proptest::collection::vec(any::<String>(), 0..=4),
        max_tokens,
        setting(),
        setting(),
    )
        .prop_map(
            |(temperature, top_p, seed, stop, max_tokens, pp, fp)| Sampling {
                temperature,
                top_p,
                seed,
                stop,
                max_tokens,
                presence_penalty: pp,
                frequency_penalty: fp,
                ..Sampling::default()
            },
        )
}

fn ollama_sampling() -> impl Strategy<Value = Sampling> {
    (
        openai_sampling(any::<Option<u32>>().boxed()),
        any::<Option<u32>>(),
        setting(),
        setting(),
        any::<Option<u32>>(),
        proptest::collection::vec(any::<String>(), 5..7),
        any::<bool>(),
    )
        .prop_map(
            |(s, top_k, min_p, repeat_penalty, num_ctx, more_stops, many)| {
                Sampling {
                    top_k,
                    min_p,
                    repeat_penalty,
                    num_ctx,
                    // Ollama has no limit on stop sequences; OpenAI's front allows four.
                    stop: if many { more_stops } else { s.stop.clone() },
                    ..s
                }
            },
        )
}

fn format(schema_name: BoxedStrategy<String>) -> impl Strategy<Value = ResponseFormat> {
    prop_oneof![
        Just(ResponseFormat::Text),
        Just(ResponseFormat::Json),
        (schema_name, small_object()).prop_map(|(name, schema)| ResponseFormat::JsonSchema {
            name,
            schema: RawJson::from_value(&schema),
        }),
    ]
}

fn keep_alive() -> impl Strategy<Value = Option<Value>> {
    proptest::option::of(prop_oneof![
        "[0-9]{1,3}[smh]".prop_map(Value::String),
        any::<i32>().prop_map(Value::from),
    ])
}

fn model() -> impl Strategy<Value = String> {
    "[a-z0-9._:/-]{1,24}"
}

fn openai_chat() -> impl Strategy<Value = ChatRequest> {
    (
        model(),
        proptest::collection::vec(message(false), 1..5),
        openai_sampling(any::<Option<u32>>().boxed()),
        format("[A-Za-z0-9_-]{1,64}".boxed()),
        proptest::collection::vec(small_object(), 0..3),
        proptest::option::of(prop_oneof![
            Just(json!("auto")),
            Just(json!("none")),
            small_object()
        ]),
        any::<Option<bool>>(),
    )
        .prop_map(
            |(model, messages, sampling, format, tools, tool_choice, parallel_tool_calls)| {
                ChatRequest {
                    model,
                    messages,
                    sampling,
                    format,
                    tools: tools.iter().map(RawJson::from_value).collect(),
                    tool_choice: tool_choice.as_ref().map(RawJson::from_value),
                    parallel_tool_calls,
                    keep_alive: None,
                    fairness: None,
                }
            },
        )
}

fn ollama_chat() -> impl Strategy<Value = ChatRequest> {
    (
        model(),
        proptest::collection::vec(message(true), 0..5),
        ollama_sampling(),
        // Ollama's `format` carries only the schema; its front names every schema "schema".
        format(Just("schema".to_owned()).boxed()),
        proptest::collection::vec(small_object(), 0..3),
        keep_alive(),
    )
        .prop_map(
            |(model, messages, sampling, format, tools, keep_alive)| ChatRequest {
                model,
                messages,
                sampling,
                format,
                tools: tools.iter().map(RawJson::from_value).collect(),
                tool_choice: None,
                parallel_tool_calls: None,
                keep_alive,
                fairness: None,
            },
        )
}

fn openai_completion() -> impl Strategy<Value = CompletionRequest> {
    (
        model(),
        any::<String>(),
        proptest::option::of(any::<String>()),
        // The front fills in OpenAI's default of 16, so the written request always has one.
        openai_sampling(any::<u32>().prop_map(Some).boxed()),
    )
        .prop_map(|(model, prompt, suffix, sampling)| CompletionRequest {
            model,
            prompt,
            suffix,
            system: None,
            raw: true,
            sampling,
            format: ResponseFormat::Text,
            keep_alive: None,
            fairness: None,
        })
}

fn ollama_generate() -> impl Strategy<Value = CompletionRequest> {
    (
        model(),
        any::<String>(),
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<String>()),
        any::<bool>(),
        ollama_sampling(),
        format(Just("schema".to_owned()).boxed()),
        keep_alive(),
    )
        .prop_map(
            |(model, prompt, suffix, system, raw, sampling, format, keep_alive)| {
                CompletionRequest {
                    model,
                    prompt,
                    suffix,
                    // Raw mode refuses a system prompt.
                    system: system.filter(|_| !raw),
                    raw,
                    sampling,
                    format,
                    keep_alive,
                    fairness: None,
                }
            },
        )
}

fn embed(openai: bool) -> impl Strategy<Value = EmbedRequest> {
    (
        model(),
        proptest::collection::vec(any::<String>(), usize::from(openai)..5),
        any::<Option<u32>>(),
        any::<Option<bool>>(),
        keep_alive(),
    )
        .prop_map(
            move |(model, input, dimensions, truncate, keep_alive)| EmbedRequest {
                model,
                input,
                dimensions,
                truncate: truncate.filter(|_| !openai),
                keep_alive: keep_alive.filter(|_| !openai),
            },
        )
}

/// A body as bytes, as a backend would receive it and a front would be sent it.
fn bytes_of(body: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(body).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Nesting

/// `depth` levels of arrays and objects (`shape` picks per level) around a scalar.
fn nested(shape: &[bool]) -> String {
    let mut text = String::new();
    for &array in shape {
        text.push_str(if array { "[" } else { "{\"k\":" });
    }
    text.push('1');
    for &array in shape.iter().rev() {
        text.push(if array { ']' } else { '}' });
    }
    text
}

/// Where a nested value is put: the body, how many levels sit above the value, and whether the
/// field takes any JSON value (so a shallow nesting parses).
fn placements(v: &str) -> Vec<(&'static str, String, usize, bool)> {
    vec![
        (
            "openai chat tools",
            format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"tools":[{v}]}}"#
            ),
            2,
            true,
        ),
        (
            "openai chat response_format",
            format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"response_format":{v}}}"#
            ),
            1,
            true,
        ),
        (
            "openai chat content",
            format!(r#"{{"model":"m","messages":[{{"role":"user","content":{v}}}]}}"#),
            3,
            false,
        ),
        (
            "ollama chat format",
            format!(r#"{{"model":"m","format":{v}}}"#),
            1,
            true,
        ),
        (
            "ollama tool arguments",
            format!(
                r#"{{"model":"m","messages":[{{"role":"assistant","tool_calls":[{{"function":{{"name":"f","arguments":{v}}}}}]}}]}}"#
            ),
            6,
            true,
        ),
        (
            "ollama embed input",
            format!(r#"{{"model":"m","input":{v}}}"#),
            1,
            true,
        ),
    ]
}

/// Placements in fields kept as raw JSON (validated without recursion, never built).
const RAW_PLACEMENTS: [&str; 4] = [
    "openai chat tools",
    "openai chat response_format",
    "ollama chat format",
    "ollama tool arguments",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        parse_everything(&body);
    }

    /// Valid bodies with one byte changed or cut short: close to what parses, so the parsers'
    /// and converters' later branches run too.
    #[test]
    fn damaged_bodies_never_panic(
        req in openai_chat(),
        completion in ollama_generate(),
        at in any::<usize>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        for body in [
            bytes_of(&openai::backend_chat_body(&req)),
            bytes_of(&ollama::backend_chat_body(&req)),
            bytes_of(&ollama::backend_generate_body(&completion)),
            bytes_of(&openai::backend_completion_body(&completion)),
        ] {
            let mut body = body;
            let at = at % body.len();
            if cut {
                body.truncate(at);
            } else {
                body[at] = byte;
            }
            parse_everything(&body);
        }
    }

    /// Past the recursion limit every placement that builds a tree is an error; short of it, a
    /// field that takes any JSON value parses. Unknown fields, and the raw JSON fields (tools,
    /// schemas, tool-call arguments), are skipped without recursion at any depth, never
    /// overflowing: the gateway's body extractor bounds the depth of the whole body.
    #[test]
    fn deep_nesting_is_refused_not_overflowed(
        shape in prop_oneof![
            proptest::collection::vec(any::<bool>(), 1..140),
            proptest::collection::vec(any::<bool>(), 1..2000),
        ],
    ) {
        let v = nested(&shape);
        for (what, body, above, takes_any) in placements(&v) {
            // serde_json allows 127 levels of arrays and objects; the 128th is an error.
            let levels = above + shape.len();
            let parsed = [
                serde_json::from_slice::<openai::ChatCompletionRequest>(body.as_bytes()).is_ok(),
                serde_json::from_slice::<ollama::ChatRequestIn>(body.as_bytes()).is_ok(),
                serde_json::from_slice::<ollama::EmbedRequestIn>(body.as_bytes()).is_ok(),
            ];
            // The one type the placement was written for (the others may refuse it anyway).
            let mine = match what {
                w if w.starts_with("openai") => parsed[0],
                "ollama embed input" => parsed[2],
                _ => parsed[1],
            };
            let raw = RAW_PLACEMENTS.contains(&what);
            if levels >= 128 && !raw {
                prop_assert!(!mine, "{} at {} levels parsed", what, levels);
            } else if levels <= 120 && takes_any {
                prop_assert!(mine, "{} at {} levels refused", what, levels);
            }
        }
        let ignored = format!(r#"{{"model":"m","messages":[],"unknown":{v}}}"#);
        prop_assert!(serde_json::from_slice::<ollama::ChatRequestIn>(ignored.as_bytes()).is_ok());
    }

    #[test]
    fn openai_chat_round_trips(req in openai_chat()) {
        let body = bytes_of(&openai::backend_chat_body(&req));
        let parsed: openai::ChatCompletionRequest = serde_json::from_slice(&body).unwrap();
        prop_assert!(parsed.wants_stream());
        prop_assert_eq!(parsed.into_canonical().unwrap(), req);
    }

    #[test]
    fn ollama_chat_round_trips(req in ollama_chat()) {
        let body = bytes_of(&ollama::backend_chat_body(&req));
        let parsed: ollama::ChatRequestIn = serde_json::from_slice(&body).unwrap();
        prop_assert_eq!(parsed.into_canonical().unwrap(), req);
    }

    #[test]
    fn openai_completion_round_trips(req in openai_completion()) {
        let body = bytes_of(&openai::backend_completion_body(&req));
        let parsed: openai::CompletionRequestIn = serde_json::from_slice(&body).unwrap();
        prop_assert_eq!(parsed.into_canonical().unwrap(), req);
    }

    #[test]
    fn ollama_generate_round_trips(req in ollama_generate()) {
        let body = bytes_of(&ollama::backend_generate_body(&req));
        let parsed: ollama::GenerateRequestIn = serde_json::from_slice(&body).unwrap();
        prop_assert_eq!(parsed.into_canonical().unwrap(), req);
    }

    #[test]
    fn embed_requests_round_trip(o in embed(true), l in embed(false)) {
        let body = bytes_of(&openai::backend_embed_body(&o));
        let parsed: openai::EmbeddingRequestIn = serde_json::from_slice(&body).unwrap();
        prop_assert_eq!(parsed.encoding().unwrap(), openai::EncodingFormat::Float);
        prop_assert_eq!(parsed.into_canonical().unwrap(), o);
        let body = bytes_of(&ollama::backend_embed_body(&l));
        let parsed: ollama::EmbedRequestIn = serde_json::from_slice(&body).unwrap();
        prop_assert_eq!(parsed.into_canonical().unwrap(), l);
    }
}
