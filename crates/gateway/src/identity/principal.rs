//! Who is calling and what they may do: the authenticated `Principal`, the role sets of the
//! route groups, and the break-glass request header. A leaf: authentication produces these,
//! and the rest of the crate only reads them.

use wardgate_store::Role;

/// The header a break-glass principal states its reason in, on every request.
pub const BREAK_GLASS_REASON_HEADER: &str = "x-wardgate-break-glass-reason";
/// The longest break-glass reason accepted, in characters.
pub const MAX_BREAK_GLASS_REASON: usize = 200;

/// The authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    pub key_id: String,
    pub tenant: String,
    /// Models the key may use; empty means all.
    pub models: Vec<String>,
    /// What the caller may do; empty only for a token whose provider granted no role
    /// wardgate knows (every route then refuses it).
    pub roles: Vec<Role>,
    /// How the caller authenticated.
    pub method: wardgate_audit::AuthMethod,
}

impl Principal {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether the key may use a public model name (alias or canonical name). Break-glass
    /// access is not limited to the key's models: an emergency does not wait for a re-scope.
    pub fn may_use(&self, public_name: &str, canonical: &str) -> bool {
        self.models.is_empty()
            || self.has(Role::BreakGlass)
            || self
                .models
                .iter()
                .any(|m| m == public_name || m == canonical)
    }
}

/// Which roles may call a group of routes. Deny by default: a route group without an
/// `authorize` layer is reachable by no one but its fallback.
#[derive(Clone, Copy, Debug)]
pub struct Allowed(pub &'static [Role]);

/// The model routes of both fronts.
pub const INFERENCE: Allowed = Allowed(&[Role::User, Role::BreakGlass]);
/// Keys and tenants.
pub const ADMIN: Allowed = Allowed(&[Role::Admin]);
/// Reading the audit log.
pub const AUDIT_READ: Allowed = Allowed(&[Role::Auditor, Role::BreakGlass]);
/// Scraping the security counters.
pub const METRICS: Allowed = Allowed(&[Role::Admin, Role::Auditor]);
