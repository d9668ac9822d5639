//! Request bounds applied after parsing and before any backend is called: message count, caps
//! on output tokens and context size, and the context-window fit.

use wardgate_api::BadRequest;
use wardgate_api::canonical::{ChatRequest, CompletionRequest, ResponseFormat, Sampling};
use wardgate_backends::Route;

use crate::config::{Limits, OverCap};
use crate::error::ApiError;
use crate::pipeline::tokens;

/// Which front's names to use in messages.
#[derive(Clone, Copy, Debug)]
pub struct ParamNames {
    pub max_tokens: &'static str,
    pub num_ctx: &'static str,
    pub schema: &'static str,
}

pub const OPENAI: ParamNames = ParamNames {
    max_tokens: "max_tokens",
    num_ctx: "num_ctx",
    schema: "response_format.json_schema.schema",
};
pub const OLLAMA: ParamNames = ParamNames {
    max_tokens: "options.num_predict",
    num_ctx: "options.num_ctx",
    schema: "format",
};

/// What the checks changed, for the `x-wardgate-clamped` response header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    pub clamped: bool,
    /// Prompt estimate in tokens.
    pub prompt_tokens: u64,
}

fn caps(
    limits: &Limits,
    route: &Route,
    s: &mut Sampling,
    names: ParamNames,
) -> Result<bool, ApiError> {
    let mut clamped = false;
    let mut cap = |v: &mut Option<u32>, max: u32, param: &'static str| -> Result<(), ApiError> {
        match *v {
            Some(n) if n > max => match limits.over_cap {
                OverCap::Reject => Err(ApiError::BadRequest(BadRequest::param(
                    param,
                    format!("{param} must be at most {max}"),
                ))),
                OverCap::Clamp => {
                    *v = Some(max);
                    clamped = true;
                    Ok(())
                }
            },
            _ => Ok(()),
        }
    };
    cap(
        &mut s.max_tokens,
        limits.max_output_tokens,
        names.max_tokens,
    )?;
    cap(&mut s.num_ctx, route.context_window, names.num_ctx)?;
    Ok(clamped)
}

fn fits(route: &Route, prompt: u64, s: &Sampling) -> Result<(), ApiError> {
    let window = u64::from(
        s.num_ctx
            .unwrap_or(route.context_window)
            .min(route.context_window),
    );
    let requested = prompt + u64::from(s.max_tokens.unwrap_or(0));
    if prompt >= window || requested > window {
        return Err(ApiError::ContextLengthExceeded {
            window: window as u32,
            requested,
        });
    }
    Ok(())
}

/// The embedded engine's schema bounds (`engine.schema_*`), checked here as well when the
/// route can reach the engine: the client gets a 400 naming the bound before anything is
/// queued, from the gateway's own words. The engine checks again (it can be called by any
/// gateway); converting and the time limit stay with the engine.
pub fn check_schema(
    engine: &wardgate_engine::SchemaLimits,
    route: &Route,
    format: &ResponseFormat,
    names: ParamNames,
) -> Result<(), ApiError> {
    let ResponseFormat::JsonSchema { schema, .. } = format else {
        return Ok(());
    };
    if !route
        .chain
        .iter()
        .any(|l| l.pool.replicas().any(|r| r.backend.kind() == "embedded"))
    {
        return Ok(());
    }
    wardgate_engine::schema::check(schema.get(), engine)
        .map(|_| ())
        .map_err(|e| ApiError::BadRequest(BadRequest::param(names.schema, e.to_string())))
}

/// Stop sequences, counted against the context window like the prompt. They are not part of
/// the prompt, but nothing sound needs more of them than a context holds, and counting them
/// bounds what the gateway scans and forwards (the black-box attack sent 4 MB of `stop`,
/// accepted where the same text as content was refused). A response schema is not counted:
/// it is no prompt text, and the engine's schema bounds (`engine.schema_*`) limit it.
fn forwarded_extras(sampling: &Sampling) -> u64 {
    sampling.stop.iter().map(|s| tokens::estimate_text(s)).sum()
}

pub fn check_chat(
    limits: &Limits,
    route: &Route,
    req: &mut ChatRequest,
    names: ParamNames,
) -> Result<Checked, ApiError> {
    if req.messages.len() > limits.max_messages {
        return Err(ApiError::BadRequest(BadRequest::param(
            "messages",
            format!("at most {} messages per request", limits.max_messages),
        )));
    }
    let clamped = caps(limits, route, &mut req.sampling, names)?;
    let prompt_tokens = tokens::estimate_messages(&req.messages)
        + req
            .tools
            .iter()
            .chain(&req.tool_choice)
            .map(|t| tokens::estimate_text(t.get()))
            .sum::<u64>()
        + forwarded_extras(&req.sampling);
    fits(route, prompt_tokens, &req.sampling)?;
    Ok(Checked {
        clamped,
        prompt_tokens,
    })
}

pub fn check_completion(
    limits: &Limits,
    route: &Route,
    req: &mut CompletionRequest,
    names: ParamNames,
) -> Result<Checked, ApiError> {
    let clamped = caps(limits, route, &mut req.sampling, names)?;
    let prompt_tokens = tokens::estimate_text(&req.prompt)
        + req
            .system
            .as_deref()
            .map(tokens::estimate_text)
            .unwrap_or(0)
        + req
            .suffix
            .as_deref()
            .map(tokens::estimate_text)
            .unwrap_or(0)
        + forwarded_extras(&req.sampling)
        + 3;
    fits(route, prompt_tokens, &req.sampling)?;
    Ok(Checked {
        clamped,
        prompt_tokens,
    })
}
