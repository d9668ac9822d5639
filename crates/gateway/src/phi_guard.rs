//! The PHI guard on the request path: per tenant and per model, prompts carrying PHI are
//! passed through (`off`), de-identified before any backend sees them and re-identified in the
//! answer (`deidentify`), or refused with 400 naming the categories found, never the values
//! (`block`, for backends not covered by a business associate agreement).
//!
//! Which mode applies: the stricter of the model's rule and the tenant's rule (block >
//! deidentify > off), each falling back to the default when it has none. Stricter wins so that
//! neither a tenant nor a model can weaken what the other requires.
//!
//! Invariant: the pseudonym mapping of a request lives in that request's memory only and is
//! dropped (zeroised) with it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use wardgate_api::canonical::{ChatRequest, CompletionRequest, EmbedRequest, Event};
use wardgate_backends::{BackendError, EventStream};
use wardgate_phi::{Category, CategorySet, Detector, Pseudonymizer};

/// What the guard does with PHI in a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PhiMode {
    Off,
    Deidentify,
    Block,
}

impl PhiMode {
    pub fn parse(s: &str) -> Option<PhiMode> {
        match s {
            "off" => Some(PhiMode::Off),
            "deidentify" => Some(PhiMode::Deidentify),
            "block" => Some(PhiMode::Block),
            _ => None,
        }
    }
}

/// One rule: a mode and, for `block`, the categories that block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhiRule {
    pub mode: PhiMode,
    pub block: CategorySet,
}

/// The configured policy.
#[derive(Clone, Debug)]
pub struct PhiPolicy {
    pub default: PhiRule,
    pub tenants: HashMap<String, PhiRule>,
    pub models: HashMap<String, PhiRule>,
    pub min_score: f32,
}

impl Default for PhiPolicy {
    fn default() -> Self {
        PhiPolicy {
            default: PhiRule {
                mode: PhiMode::Off,
                block: CategorySet::all(),
            },
            tenants: HashMap::new(),
            models: HashMap::new(),
            min_score: wardgate_phi::DEFAULT_MIN_SCORE,
        }
    }
}

impl PhiPolicy {
    /// The rule for a tenant calling a public model name.
    pub fn rule_for(&self, tenant: &str, model: &str) -> PhiRule {
        let t = self.tenants.get(tenant).copied().unwrap_or(self.default);
        let m = self.models.get(model).copied().unwrap_or(self.default);
        match t.mode.cmp(&m.mode) {
            std::cmp::Ordering::Greater => t,
            std::cmp::Ordering::Less => m,
            std::cmp::Ordering::Equal => PhiRule {
                mode: t.mode,
                block: union(t.block, m.block),
            },
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

impl PhiGuard {
    pub fn new(policy: PhiPolicy) -> PhiGuard {
        let detector = Detector::new().with_min_score(policy.min_score);
        PhiGuard { policy, detector }
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
                for t in texts.iter() {
                    for s in self.detector.detect(t) {
                        if rule.block.contains(s.category) {
                            found = found.with(s.category);
                        }
                    }
                }
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
                Ok((!p.is_empty()).then(|| Arc::new(p)))
            }
        }
    }
}

/// The texts of a chat request a backend would see.
pub fn chat_texts(req: &mut ChatRequest) -> Vec<&mut String> {
    let mut out = Vec::new();
    for m in req.messages.iter_mut() {
        out.push(&mut m.content);
        for c in m.tool_calls.iter_mut() {
            out.push(&mut c.arguments);
        }
    }
    out
}

/// The texts of a completion request a backend would see.
pub fn completion_texts(req: &mut CompletionRequest) -> Vec<&mut String> {
    let mut out = vec![&mut req.prompt];
    if let Some(s) = req.system.as_mut() {
        out.push(s);
    }
    if let Some(s) = req.suffix.as_mut() {
        out.push(s);
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
