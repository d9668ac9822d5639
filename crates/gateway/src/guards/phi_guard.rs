//! The PHI guard on the request path: per tenant and per model, prompts carrying PHI are
//! passed through (`off`), de-identified before any backend sees them and re-identified in the
//! answer (`deidentify`), or refused with 400 naming the categories found, never the values
//! (`block`, for backends not covered by a business associate agreement).
//!
//! Which mode applies: the stricter of the model's rule and the tenant's rule (block >
//! deidentify > off), each falling back to the default when it has none. Stricter wins so that
//! neither a tenant nor a model can weaken what the other requires.
//!
//! Every text a backend would see passes the guard: messages, tool calls (names and
//! arguments), stop sequences, and every string literal inside the raw JSON fields (tool
//! definitions, `tool_choice`, the response schema), object keys included: a property name
//! can carry PHI as well as a description or an enum value. Raw JSON is rewritten literal by
//! literal (unescape, guard, re-escape) in one linear pass, never built into a tree. Images
//! cannot be scanned: under `block` or `deidentify` they are refused unless the rule sets
//! `allow_images`.
//!
//! Invariant: the pseudonym mapping of a request lives in that request's memory only and is
//! dropped (zeroised) with it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use wardgate_api::canonical::{ChatRequest, CompletionRequest, EmbedRequest, Event, RawJson};
use wardgate_backends::{BackendError, EventStream};
use wardgate_phi::{Category, CategorySet, Detector, Pseudonymizer};

pub use crate::config::phi::{PhiMode, PhiPolicy, PhiRule};

impl PhiPolicy {
    /// The rule for a tenant calling a public model name.
    ///
    /// Images pass only if every rule written for this tenant and model allows them (the
    /// default's setting when neither has a rule): a model rule can allow images for itself
    /// without the default allowing them everywhere, and neither side can allow them for the
    /// other.
    pub fn rule_for(&self, tenant: &str, model: &str) -> PhiRule {
        let (t_rule, m_rule) = (self.tenants.get(tenant), self.models.get(model));
        let allow_images = match (t_rule, m_rule) {
            (None, None) => self.default.allow_images,
            (t, m) => t.is_none_or(|r| r.allow_images) && m.is_none_or(|r| r.allow_images),
        };
        let t = t_rule.copied().unwrap_or(self.default);
        let m = m_rule.copied().unwrap_or(self.default);
        let rule = match t.mode.cmp(&m.mode) {
            std::cmp::Ordering::Greater => t,
            std::cmp::Ordering::Less => m,
            std::cmp::Ordering::Equal => PhiRule {
                mode: t.mode,
                block: union(t.block, m.block),
                allow_images,
            },
        };
        PhiRule {
            allow_images,
            ..rule
        }
    }
}

fn union(a: CategorySet, b: CategorySet) -> CategorySet {
    Category::ALL
        .into_iter()
        .filter(|c| b.contains(*c))
        .fold(a, CategorySet::with)
}

/// The guard built from the policy, shared by all requests.
#[derive(Debug)]
pub struct PhiGuard {
    pub policy: PhiPolicy,
    detector: Detector,
}

/// A request refused for carrying PHI: the categories found, sorted, without values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked(pub Vec<Category>);

/// Why the guard refused a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    Phi(Blocked),
    /// Images under a rule that does not allow them.
    Images,
}

impl PhiGuard {
    pub fn new(policy: PhiPolicy) -> PhiGuard {
        let detector = Detector::new().with_min_score(policy.min_score);
        PhiGuard { policy, detector }
    }

    /// Applies the rule to every text of a request, raw JSON fields included, and refuses
    /// images the rule does not allow. Returns the request's pseudonymizer when something was
    /// replaced, to re-identify the answer with.
    pub fn apply_texts(
        &self,
        rule: PhiRule,
        texts: &mut Texts<'_>,
    ) -> Result<Option<Arc<Pseudonymizer>>, Refused> {
        match rule.mode {
            PhiMode::Off => Ok(None),
            PhiMode::Block | PhiMode::Deidentify if texts.images > 0 && !rule.allow_images => {
                Err(Refused::Images)
            }
            PhiMode::Block => {
                let mut found = CategorySet::empty();
                let mut counts = [0u32; Category::ALL.len()];
                let mut scan = |t: &str| {
                    for s in self.detector.detect(t) {
                        if rule.block.contains(s.category) {
                            found = found.with(s.category);
                            count(&mut counts, s.category);
                        }
                    }
                };
                for t in texts.prompt.iter().chain(texts.other.iter()) {
                    scan(t);
                }
                for r in texts.raw.iter() {
                    for_each_literal(r.get(), |lit| {
                        scan(lit);
                        None
                    });
                }
                record_findings("block", &counts);
                let found: Vec<Category> = Category::ALL
                    .into_iter()
                    .filter(|c| found.contains(*c))
                    .collect();
                if found.is_empty() {
                    Ok(None)
                } else {
                    Err(Refused::Phi(Blocked(found)))
                }
            }
            PhiMode::Deidentify => {
                let mut p = Pseudonymizer::new(&self.detector);
                for t in texts.prompt.iter_mut().chain(texts.other.iter_mut()) {
                    let replaced = p.pseudonymize(t);
                    **t = replaced;
                }
                for r in texts.raw.iter_mut() {
                    let rewritten = for_each_literal(r.get(), |lit| {
                        let out = p.pseudonymize(lit);
                        (out != lit).then_some(out)
                    });
                    // Literals re-escaped in place of literals: the text stays one JSON value.
                    if let Some(text) = rewritten
                        && let Ok(raw) = RawJson::from_string(text)
                    {
                        **r = raw;
                    }
                }
                record_minted(&p);
                Ok((!p.is_empty()).then(|| Arc::new(p)))
            }
        }
    }

    /// Applies the rule to every text of a request. Returns the request's pseudonymizer when
    /// something was replaced, to re-identify the answer with.
    pub fn apply(
        &self,
        rule: PhiRule,
        texts: &mut [&mut String],
    ) -> Result<Option<Arc<Pseudonymizer>>, Blocked> {
        match rule.mode {
            PhiMode::Off => Ok(None),
            PhiMode::Block => {
                let mut found = CategorySet::empty();
                let mut counts = [0u32; Category::ALL.len()];
                for t in texts.iter() {
                    for s in self.detector.detect(t) {
                        if rule.block.contains(s.category) {
                            found = found.with(s.category);
                            count(&mut counts, s.category);
                        }
                    }
                }
                record_findings("block", &counts);
                let found: Vec<Category> = Category::ALL
                    .into_iter()
                    .filter(|c| found.contains(*c))
                    .collect();
                if found.is_empty() {
                    Ok(None)
                } else {
                    Err(Blocked(found))
                }
            }
            PhiMode::Deidentify => {
                let mut p = Pseudonymizer::new(&self.detector);
                for t in texts.iter_mut() {
                    let replaced = p.pseudonymize(t);
                    **t = replaced;
                }
                record_minted(&p);
                Ok((!p.is_empty()).then(|| Arc::new(p)))
            }
        }
    }
}

/// Counts a finding of `category` in `counts` (by [`Category::ALL`] position).
fn count(counts: &mut [u32; Category::ALL.len()], category: Category) {
    if let Some(i) = Category::ALL.iter().position(|&c| c == category) {
        counts[i] = counts[i].saturating_add(1);
    }
}

/// Counter of the guard's findings by category and mode (docs/METRICS.md): counts only, never a
/// value. Counted here, where the guard acts, so the guard needs nothing of `crate::metrics`.
pub const PHI_FINDINGS: &str = "wardgate_phi_findings_total";

/// `n` findings of `category` in one request, in the mode that acted on them.
fn phi_findings(mode: &'static str, category: &'static str, n: u32) {
    metrics::counter!(PHI_FINDINGS, "category" => category, "mode" => mode).increment(u64::from(n));
}

/// The findings a `block` rule acted on, as metrics (counts by category only).
fn record_findings(mode: &'static str, counts: &[u32; Category::ALL.len()]) {
    for (c, n) in Category::ALL.iter().zip(counts) {
        if *n > 0 {
            phi_findings(mode, c.name(), *n);
        }
    }
}

/// The values a `deidentify` rule replaced, as metrics (counts by category only).
fn record_minted(p: &Pseudonymizer) {
    for (c, n) in p.minted() {
        phi_findings("deidentify", c.name(), n);
    }
}

/// Every text of a request a backend would see, borrowed from the request so the guard can
/// rewrite it in place.
#[derive(Debug, Default)]
pub struct Texts<'a> {
    /// The prompt texts (what the audit's prompt digest covers).
    pub prompt: Vec<&'a mut String>,
    /// Other forwarded strings: stop sequences, tool names and call ids.
    pub other: Vec<&'a mut String>,
    /// Raw JSON fields (tools, `tool_choice`, the response schema): every string literal in
    /// them, keys included, is guarded.
    raw: Vec<&'a mut RawJson>,
    /// Images in the request (they cannot be scanned).
    pub images: usize,
}

/// Calls `f` with each string literal of JSON `text` (object keys included), unescaped, in
/// one linear pass without building a tree. Where `f` returns a replacement, the result is
/// the text with those literals replaced (re-escaped); `None` when nothing was replaced.
/// Memory: at most one copy of the text, plus one literal at a time.
fn for_each_literal(text: &str, mut f: impl FnMut(&str) -> Option<String>) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    // Where the text not yet copied to `out` starts.
    let mut copied = 0;
    let (mut start, mut in_string, mut escaped, mut has_escape) = (0, false, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => {
                    escaped = true;
                    has_escape = true;
                }
                b'"' => {
                    in_string = false;
                    let literal = &text[start..=i];
                    let unescaped: std::borrow::Cow<'_, str> = if has_escape {
                        serde_json::from_str::<String>(literal)
                            .map(std::borrow::Cow::Owned)
                            .unwrap_or_default()
                    } else {
                        std::borrow::Cow::Borrowed(&literal[1..literal.len() - 1])
                    };
                    if let Some(new) = f(&unescaped) {
                        let o = out.get_or_insert_with(|| String::with_capacity(text.len() + 64));
                        o.push_str(&text[copied..start]);
                        o.push_str(&serde_json::Value::String(new).to_string());
                        copied = i + 1;
                    }
                }
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
            has_escape = false;
            start = i;
        }
    }
    if let Some(o) = out.as_mut() {
        o.push_str(&text[copied..]);
    }
    out
}

/// A response format's forwarded texts: the schema's name (a free string the client chose)
/// and the schema itself.
fn schema_of(
    format: &mut wardgate_api::canonical::ResponseFormat,
) -> Option<(&mut String, &mut RawJson)> {
    match format {
        wardgate_api::canonical::ResponseFormat::JsonSchema { name, schema } => {
            Some((name, schema))
        }
        _ => None,
    }
}

/// The texts of a chat request a backend would see.
pub fn chat_texts(req: &mut ChatRequest) -> Texts<'_> {
    let mut out = Texts::default();
    for m in req.messages.iter_mut() {
        out.prompt.push(&mut m.content);
        for c in m.tool_calls.iter_mut() {
            out.prompt.push(&mut c.arguments);
            out.other.push(&mut c.name);
            out.other.push(&mut c.id);
        }
        if let Some(n) = m.tool_name.as_mut() {
            out.other.push(n);
        }
        if let Some(id) = m.tool_call_id.as_mut() {
            out.other.push(id);
        }
        out.images += m.images.len();
    }
    out.other.extend(req.sampling.stop.iter_mut());
    for t in req.tools.iter_mut() {
        out.raw.push(t);
    }
    if let Some(tc) = req.tool_choice.as_mut() {
        out.raw.push(tc);
    }
    if let Some((name, schema)) = schema_of(&mut req.format) {
        out.other.push(name);
        out.raw.push(schema);
    }
    out
}

/// The texts of a completion request a backend would see.
pub fn completion_texts(req: &mut CompletionRequest) -> Texts<'_> {
    let mut out = Texts::default();
    out.prompt.push(&mut req.prompt);
    if let Some(s) = req.system.as_mut() {
        out.prompt.push(s);
    }
    if let Some(s) = req.suffix.as_mut() {
        out.prompt.push(s);
    }
    out.other.extend(req.sampling.stop.iter_mut());
    if let Some((name, schema)) = schema_of(&mut req.format) {
        out.other.push(name);
        out.raw.push(schema);
    }
    out
}

/// The texts of an embeddings request.
pub fn embed_texts(req: &mut EmbedRequest) -> Vec<&mut String> {
    req.input.iter_mut().collect()
}

/// Restores pseudonyms in a backend's event stream. A token split across deltas is held back
/// only until it can be decided; tool-call argument fragments are restored the same way, each
/// call on its own.
pub fn reidentify(inner: EventStream, p: Arc<Pseudonymizer>) -> EventStream {
    Box::pin(Reidentified {
        inner,
        text: wardgate_phi::OwnedReidentifier::new(p.clone()),
        calls: HashMap::new(),
        p,
    })
}

struct Reidentified {
    inner: EventStream,
    p: Arc<Pseudonymizer>,
    text: wardgate_phi::OwnedReidentifier,
    calls: HashMap<u32, wardgate_phi::OwnedReidentifier>,
}

impl Stream for Reidentified {
    type Item = Result<Event, BackendError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(Event::Delta {
                content,
                mut tool_calls,
            }))) => {
                let content = this.text.push(&content);
                for c in tool_calls.iter_mut() {
                    let r = this
                        .calls
                        .entry(c.index)
                        .or_insert_with(|| wardgate_phi::OwnedReidentifier::new(this.p.clone()));
                    c.arguments = r.push(&c.arguments);
                    // A function name arrives whole in one fragment; tool definitions were
                    // guarded, so a name the model echoes may hold a token.
                    if let Some(name) = c.name.as_mut() {
                        *name = this.p.reidentify(name);
                    }
                }
                Poll::Ready(Some(Ok(Event::Delta {
                    content,
                    tool_calls,
                })))
            }
            Poll::Ready(Some(Ok(finish @ Event::Finish { .. }))) => {
                // Whatever was held back is released before the end: a partial token that
                // never completed is text the model wrote.
                let rest = this.text.finish();
                let mut calls = Vec::new();
                for (index, r) in this.calls.iter_mut() {
                    let tail = r.finish();
                    if !tail.is_empty() {
                        calls.push(wardgate_api::canonical::ToolCallDelta {
                            index: *index,
                            id: None,
                            name: None,
                            arguments: tail,
                        });
                    }
                }
                if rest.is_empty() && calls.is_empty() {
                    Poll::Ready(Some(Ok(finish)))
                } else {
                    // Emit the tail now and the finish on the next poll.
                    let tail = Event::Delta {
                        content: rest,
                        tool_calls: calls,
                    };
                    let finish_stream = futures::stream::once(async move { Ok(finish) });
                    let old = std::mem::replace(&mut this.inner, Box::pin(finish_stream));
                    drop(old);
                    Poll::Ready(Some(Ok(tail)))
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn literals_are_rewritten_in_place_keys_and_escapes_included() {
        let text = r#"{"a b":["x\"y", 1, {"k":"v"}], "n": null}"#;
        let mut seen = Vec::new();
        let out = for_each_literal(text, |s| {
            seen.push(s.to_owned());
            (s == "x\"y" || s == "a b").then(|| format!("<{s}>"))
        });
        assert_eq!(seen, ["a b", "x\"y", "k", "v", "n"]);
        let out = out.unwrap();
        assert_eq!(out, r#"{"<a b>":["<x\"y>", 1, {"k":"v"}], "n": null}"#);
        serde_json::from_str::<serde_json::Value>(&out).unwrap();
        assert_eq!(for_each_literal(text, |_| None), None);
    }

    #[test]
    fn raw_fields_are_guarded_and_images_refused() {
        let guard = PhiGuard::new(PhiPolicy::default());
        let mut req = ChatRequest {
            model: "m".into(),
            messages: vec![wardgate_api::canonical::Message::new(
                wardgate_api::canonical::Role::User,
                "hi",
            )],
            sampling: Default::default(),
            format: Default::default(),
            tools: vec![
                RawJson::from_string(
                    r#"{"function":{"description":"Patient SSN 123-45-6789"}}"#.into(),
                )
                .unwrap(),
            ],
            tool_choice: None,
            parallel_tool_calls: None,
            keep_alive: None,
            fairness: None,
        };
        let rule = |mode| PhiRule {
            mode,
            block: CategorySet::all(),
            allow_images: false,
        };
        let mut texts = chat_texts(&mut req);
        assert!(matches!(
            guard.apply_texts(rule(PhiMode::Block), &mut texts),
            Err(Refused::Phi(_))
        ));
        let p = guard
            .apply_texts(rule(PhiMode::Deidentify), &mut texts)
            .unwrap()
            .unwrap();
        drop(texts);
        assert!(
            !req.tools[0].get().contains("123-45-6789"),
            "{:?}",
            req.tools
        );
        assert!(p.reidentify(req.tools[0].get()).contains("123-45-6789"));
        req.messages[0].images.push("AAAA".into());
        let mut texts = chat_texts(&mut req);
        assert!(matches!(
            guard.apply_texts(rule(PhiMode::Deidentify), &mut texts),
            Err(Refused::Images)
        ));
    }
}
