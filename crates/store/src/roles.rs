//! What a principal may do. A key or token carries one or more roles; each route names the
//! roles that may call it (deny by default: no role, no route).
//!
//! The roles are separated on purpose: an `admin` manages keys and tenants but cannot read the
//! audit log, an `auditor` reads the audit log but cannot call a model or change anything, so
//! no single ordinary credential both acts and erases the trace of acting.

use std::fmt;
use std::str::FromStr;

use time::{Duration, OffsetDateTime};

use crate::StoreError;

/// The longest a `break_glass` key may live: emergency access is for an emergency.
pub const MAX_BREAK_GLASS_LIFETIME: Duration = Duration::hours(24);

/// One role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Inference: the model routes of both fronts.
    User,
    /// Keys, tenants and configuration reload (`/admin/keys`, `/admin/tenants`).
    Admin,
    /// Reads the audit log (`/admin/audit`); nothing else.
    Auditor,
    /// Emergency access: inference on any model and audit reads, only on keys that expire
    /// within [`MAX_BREAK_GLASS_LIFETIME`], only with a stated reason on every request, and
    /// every use audited at high severity.
    BreakGlass,
}

impl Role {
    /// Every role, in a fixed order.
    pub const ALL: [Role; 4] = [Role::User, Role::Admin, Role::Auditor, Role::BreakGlass];

    /// The role's name on the wire, in the store and in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::BreakGlass => "break_glass",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Role, StoreError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                StoreError::Invalid("role must be one of user, admin, auditor, break_glass".into())
            })
    }
}

impl serde::Serialize for Role {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The roles of a new key, checked and put in canonical order (sorted, each once). No roles
/// means `user`. `break_glass` needs an expiry no further than [`MAX_BREAK_GLASS_LIFETIME`]
/// from `now`, and stands alone: an emergency key is not also an everyday one.
pub fn normalize_roles(
    mut roles: Vec<Role>,
    expires_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<Vec<Role>, StoreError> {
    if roles.is_empty() {
        roles.push(Role::User);
    }
    roles.sort_unstable();
    roles.dedup();
    if roles.contains(&Role::BreakGlass) {
        if roles.len() > 1 {
            return Err(StoreError::Invalid(
                "break_glass cannot be combined with other roles; make a separate key".into(),
            ));
        }
        let limit = now + MAX_BREAK_GLASS_LIFETIME;
        if expires_at.is_none_or(|at| at > limit) {
            return Err(StoreError::Invalid(format!(
                "a break_glass key must expire within {} hours",
                MAX_BREAK_GLASS_LIFETIME.whole_hours()
            )));
        }
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Role>(&json).unwrap(), r);
        }
        for bad in ["", "Admin", "root", "user ", "break-glass"] {
            assert!(bad.parse::<Role>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn roles_default_to_user_and_come_out_sorted_once() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(normalize_roles(vec![], None, now).unwrap(), [Role::User]);
        assert_eq!(
            normalize_roles(vec![Role::Auditor, Role::Admin, Role::Auditor], None, now).unwrap(),
            [Role::Admin, Role::Auditor]
        );
    }

    #[test]
    fn break_glass_must_be_short_lived_and_alone() {
        let now = OffsetDateTime::now_utc();
        let soon = Some(now + Duration::hours(1));
        assert_eq!(
            normalize_roles(vec![Role::BreakGlass], soon, now).unwrap(),
            [Role::BreakGlass]
        );
        assert!(normalize_roles(vec![Role::BreakGlass], None, now).is_err());
        assert!(
            normalize_roles(vec![Role::BreakGlass], Some(now + Duration::hours(25)), now).is_err()
        );
        assert!(normalize_roles(vec![Role::BreakGlass, Role::User], soon, now).is_err());
    }
}
