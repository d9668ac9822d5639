//! `[metrics]`: the metrics listener and the bounds on its labels (docs/METRICS.md).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Default of `metrics.listen` for `wardgate serve`: loopback, so private unless an operator
/// says otherwise (the listener has no authentication).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";
/// Default of `WARDGATE_LLM_METRICS_LISTEN` for `wardgate llm`: the next port, so that both
/// roles on one machine (the laptop set-up) start with their defaults.
pub const DEFAULT_LLM_LISTEN: &str = "127.0.0.1:9465";

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Where `/metrics` is served, `HOST:PORT`; `""` or `"off"` serves none. Default
    /// `127.0.0.1:9464`. `WARDGATE_METRICS_LISTEN` overrides it (`wardgate llm`:
    /// `WARDGATE_LLM_METRICS_LISTEN`, default `127.0.0.1:9465`).
    pub listen: Option<String>,
    /// Whether `wardgate_requests_total` is labelled by tenant. Default true.
    pub tenant_label: Option<bool>,
    /// The most tenants labelled by name; later ones are `_other`. Default 100, 1 to 10000.
    pub tenant_label_limit: Option<usize>,
}

/// `[metrics]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsSettings {
    /// `None`: no metrics listener, and nothing recorded.
    pub listen: Option<SocketAddr>,
    pub tenant_label: bool,
    pub tenant_label_limit: usize,
}

impl MetricsSettings {
    pub const DEFAULT_TENANT_LABEL_LIMIT: usize = 100;
    pub const MAX_TENANT_LABEL_LIMIT: usize = 10_000;
}

/// `[metrics]`, validated.
pub(super) fn metrics(raw: &RawMetrics) -> Result<MetricsSettings, ConfigError> {
    let listen = match raw.listen.as_deref().map(str::trim) {
        None => Some(DEFAULT_LISTEN),
        Some("" | "off") => None,
        Some(addr) => Some(addr),
    };
    let listen = listen
        .map(|a| {
            a.parse::<SocketAddr>().map_err(|_| {
                ConfigError::new(
                    "metrics.listen",
                    format!("`{a}` is not an address and port such as `127.0.0.1:9464` (or `off`)"),
                )
            })
        })
        .transpose()?;
    let tenant_label_limit = super::bounded(
        "metrics.tenant_label_limit",
        raw.tenant_label_limit,
        MetricsSettings::DEFAULT_TENANT_LABEL_LIMIT,
        MetricsSettings::MAX_TENANT_LABEL_LIMIT,
    )?;
    Ok(MetricsSettings {
        listen,
        tenant_label: raw.tenant_label.unwrap_or(true),
        tenant_label_limit,
    })
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn with(listen: Option<&str>) -> Result<MetricsSettings, ConfigError> {
        metrics(&RawMetrics {
            listen: listen.map(str::to_owned),
            ..RawMetrics::default()
        })
    }

    #[test]
    fn the_listener_is_private_by_default_and_can_be_turned_off() {
        let default = with(None).unwrap();
        assert_eq!(default.listen, Some(DEFAULT_LISTEN.parse().unwrap()));
        assert!(default.listen.unwrap().ip().is_loopback());
        assert_eq!(
            (default.tenant_label, default.tenant_label_limit),
            (true, 100)
        );
        assert_eq!(with(Some("")).unwrap().listen, None);
        assert_eq!(with(Some("off")).unwrap().listen, None);
        assert_eq!(
            with(Some("0.0.0.0:9464")).unwrap().listen,
            Some("0.0.0.0:9464".parse().unwrap())
        );
    }

    #[test]
    fn a_bad_address_or_limit_is_refused_by_name() {
        let e = with(Some("localhost")).unwrap_err().to_string();
        assert!(
            e.contains("metrics.listen") && e.contains("`localhost`"),
            "{e}"
        );
        for n in [0, 10_001] {
            let e = metrics(&RawMetrics {
                tenant_label_limit: Some(n),
                ..RawMetrics::default()
            })
            .unwrap_err()
            .to_string();
            assert!(e.contains("metrics.tenant_label_limit"), "{e}");
        }
    }
}
