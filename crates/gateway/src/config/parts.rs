//! The configuration in two parts: what only a restart changes ([`StartupSettings`]) and what
//! a reload may change ([`LiveSettings`]). [`Config::parts`] names every field of [`Config`]
//! without `..`, so a new setting does not compile until it is put in one part; a reload
//! compares the parts by value and reports the sections that differ by name.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{
    AuditSettings, BackendConfig, ClientCertSettings, Config, EngineSettings, LimiterBackend,
    Limits, LlmSettings, LogFormat, ModelConfig, PhiPolicy, Quotas, auth, server,
};

/// A part: its fields by the section name a reload reports, compared with `PartialEq`.
macro_rules! part {
    ($(#[$doc:meta])* $name:ident<$lt:lifetime> { $($field:ident: $ty:ty => $section:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, PartialEq)]
        pub struct $name<$lt> {
            $(pub $field: $ty,)+
        }

        impl $name<'_> {
            /// The names of the sections that differ from `other`'s, in declaration order.
            pub fn changed(&self, other: &Self) -> Vec<&'static str> {
                let mut out = Vec::new();
                $(if self.$field != other.$field {
                    out.push($section);
                })+
                out
            }
        }
    };
}

part! {
    /// What only a restart changes: listeners, stores, engines, identities.
    StartupSettings<'a> {
        listen: &'a SocketAddr => "server.listen",
        server: &'a server::ServerLimits => "server (connection limits)",
        shutdown_grace: &'a Duration => "server.shutdown_grace",
        tls: &'a Option<server::TlsSettings> => "server.tls",
        storage: (&'a PathBuf, &'a Option<super::storage::PostgresSettings>) => "storage",
        logging: (&'a LogFormat, &'a String) => "logging",
        metrics: &'a super::MetricsSettings => "metrics",
        limiter_backend: &'a LimiterBackend => "rate_limit.backend",
        key_cache_ttl: (&'a Duration, &'a auth::BroadcastSettings) => "auth.key_cache_ttl",
        max_token_bytes: &'a usize => "auth.max_token_bytes",
        lockout: &'a auth::LockoutSettings => "auth (lockout)",
        jwt: &'a Vec<auth::IssuerSettings> => "auth.jwt",
        health: (&'a Duration, &'a Duration) => "health",
        circuit_breaker: (&'a u32, &'a Duration, &'a u32, &'a Duration) => "circuit_breaker",
        engine: &'a EngineSettings => "engine",
        llm: &'a LlmSettings => "llm",
        audit: &'a AuditSettings => "audit",
        backends: &'a Vec<BackendConfig> => "backends",
        models: &'a Vec<ModelConfig> => "models",
    }
}

part! {
    /// What a reload may change while the service runs.
    LiveSettings<'a> {
        limits: &'a Limits => "limits",
        rate_limit: (&'a u32, &'a u32, &'a Quotas) => "rate_limit",
        phi: &'a PhiPolicy => "phi",
        timeouts: (&'a Duration, &'a Duration) => "server (timeouts)",
        auth: (&'a Option<Duration>, &'a String, &'a ClientCertSettings) => "auth",
    }
}

impl Config {
    /// This configuration's two parts.
    pub fn parts(&self) -> (StartupSettings<'_>, LiveSettings<'_>) {
        // No `..`: every field is placed in one part.
        let Config {
            listen,
            request_timeout,
            first_token_timeout,
            shutdown_grace,
            server,
            tls,
            client_certs,
            sqlite_path,
            postgres,
            log_format,
            log_level,
            metrics,
            limits,
            requests_per_minute,
            tenant_requests_per_minute,
            quotas,
            limiter_backend,
            key_cache_ttl,
            broadcast,
            operator_tenant,
            max_token_bytes,
            key_idle_timeout,
            lockout,
            jwt,
            health_interval,
            health_timeout,
            breaker_threshold,
            breaker_cooldown,
            breaker_busy_threshold,
            breaker_busy_cooldown,
            engine,
            llm,
            phi,
            audit,
            backends,
            models,
        } = self;
        (
            StartupSettings {
                listen,
                server,
                shutdown_grace,
                tls,
                storage: (sqlite_path, postgres),
                logging: (log_format, log_level),
                metrics,
                limiter_backend,
                key_cache_ttl: (key_cache_ttl, broadcast),
                max_token_bytes,
                lockout,
                jwt,
                health: (health_interval, health_timeout),
                circuit_breaker: (
                    breaker_threshold,
                    breaker_cooldown,
                    breaker_busy_threshold,
                    breaker_busy_cooldown,
                ),
                engine,
                llm,
                audit,
                backends,
                models,
            },
            LiveSettings {
                limits,
                rate_limit: (requests_per_minute, tenant_requests_per_minute, quotas),
                phi,
                timeouts: (request_timeout, first_token_timeout),
                auth: (key_idle_timeout, operator_tenant, client_certs),
            },
        )
    }
}
