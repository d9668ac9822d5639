//! The trace exporter: OpenTelemetry over OTLP, configured by the standard `OTEL_*` variables
//! and off when no endpoint is named. Which spans exist and what they carry is
//! `wardgate_gateway::telemetry`; this module only connects them to a collector.
//!
//! Read here: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` (one of them
//! turns tracing on), `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`
//! (`http/protobuf`, the default, or `grpc`), `OTEL_SERVICE_NAME` (default `wardgate`, or
//! `wardgate-llm`), `OTEL_TRACES_EXPORTER=none` and `OTEL_SDK_DISABLED=true` (off). The SDK and
//! the exporter read the rest themselves: `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT` and
//! their `_TRACES_` forms.

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

/// A running exporter; [`Traces::shutdown`] sends what is still queued.
pub(crate) struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// The tracer the `tracing` layer exports through.
    pub(crate) fn tracer(&self) -> SdkTracer {
        self.provider.tracer("wardgate")
    }

    /// Sends the spans still queued and stops the exporter (at graceful shutdown). The batch
    /// processor blocks while it flushes, so this runs off the async workers.
    pub(crate) async fn shutdown(self) {
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "traces: the exporter did not flush at shutdown");
        }
    }
}

/// The exporter the environment asks for, or `None` when it names no OTLP endpoint (or turns
/// traces off). Must run inside the Tokio runtime (the gRPC client starts a task there).
pub(crate) fn from_env(
    env: &dyn Fn(&str) -> Option<String>,
    default_service: &str,
) -> anyhow::Result<Option<Traces>> {
    let Some(protocol) = settings(env)? else {
        return Ok(None);
    };
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let exporter = match protocol {
        Protocol::Grpc => builder.with_tonic().with_protocol(protocol).build(),
        _ => builder.with_http().with_protocol(protocol).build(),
    }
    .context("OTEL_EXPORTER_OTLP_*: cannot set up the trace exporter")?;
    let mut resource = Resource::builder();
    let named = env("OTEL_SERVICE_NAME").is_some()
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
    if !named {
        resource = resource.with_service_name(default_service.to_owned());
    }
    // The sampler is the SDK's default, which reads OTEL_TRACES_SAMPLER (and its argument);
    // unset, it is `parentbased_always_on`.
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    // For the spans made with the OpenTelemetry API directly (the engine's phases).
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(Some(Traces { provider }))
}

/// The protocol to export with, or `None` when traces are off. Refuses a protocol this build
/// cannot speak, naming the variable.
fn settings(env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Option<Protocol>> {
    let endpoint =
        env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    if endpoint.is_none() || disabled {
        return Ok(None);
    }
    let (name, value) = match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
        Some(v) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", Some(v)),
        None => (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            env("OTEL_EXPORTER_OTLP_PROTOCOL"),
        ),
    };
    match value.as_deref().map(str::trim) {
        None | Some("http/protobuf") => Ok(Some(Protocol::HttpBinary)),
        Some("grpc") => Ok(Some(Protocol::Grpc)),
        Some(other) => anyhow::bail!(
            "{name}={other:?}: wardgate exports traces as \"http/protobuf\" (the default) or \
             \"grpc\""
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Environment variables, as name and value.
    type Vars = &'static [(&'static str, &'static str)];

    fn env_of(vars: Vars) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn traces_are_off_without_an_endpoint_and_the_protocol_is_checked() {
        let off: &[Vars] = &[
            &[],
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_SDK_DISABLED", "true"),
            ],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_TRACES_EXPORTER", "none"),
            ],
        ];
        for &vars in off {
            assert!(matches!(settings(&env_of(vars)), Ok(None)), "{vars:?}");
        }
        let cases: &[(Vars, Option<Protocol>)] = &[
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")],
                Some(Protocol::HttpBinary),
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ],
                Some(Protocol::Grpc),
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
                ],
                Some(Protocol::Grpc),
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ],
                None,
            ),
        ];
        for &(vars, want) in cases {
            match (settings(&env_of(vars)), want) {
                (Ok(Some(got)), Some(want)) => assert_eq!(got, want, "{vars:?}"),
                (Err(e), None) => {
                    assert!(e.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{e}")
                }
                (got, _) => panic!("{vars:?}: {got:?}"),
            }
        }
    }
}
