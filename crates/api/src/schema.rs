//! Hand-written OpenAPI schemas for the few wire fields whose Rust type says less than the
//! JSON does. Everything else is derived (`utoipa::ToSchema`) from the serde types themselves.

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// A field that is always `null` on the wire (kept for the clients that read it).
pub fn null() -> Schema {
    Schema::Object(ObjectBuilder::new().schema_type(Type::Null).build())
}
