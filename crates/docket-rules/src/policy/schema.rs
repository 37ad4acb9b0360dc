//! The policy document's shape for the OpenAPI document (docs/policy.md), beside the engine that
//! reads it; [`super::engine::Policy::parse`] remains what decides, naming the failing element.

use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type,
};
use utoipa::openapi::{Ref, RefOr};

use super::engine::{MAX_RULES, MAX_SLA_HOURS};

fn text(values: &[&str]) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
}

fn named(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn effects() -> Schema {
    let flags = OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(
            ArrayBuilder::new()
                .items(ObjectBuilder::new().schema_type(Type::String))
                .min_items(Some(1))
                .max_items(Some(20)),
        );
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "What a rule sets (`then`), or the values when no rule does (`defaults`).",
        ))
        .property("priority", text(&["low", "normal", "high", "urgent"]))
        .property("risk_level", text(&["low", "medium", "high", "critical"]))
        .property(
            "dual_control",
            ObjectBuilder::new().schema_type(Type::Boolean),
        )
        .property(
            "require_reason",
            ObjectBuilder::new().schema_type(Type::Boolean),
        )
        .property(
            "sla_hours",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(MAX_SLA_HOURS)),
        )
        .property(
            "auto_decision",
            text(&["never", "approve", "reject", "any"]),
        )
        .property(
            "queue",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^[A-Za-z0-9._-]{1,100}$")),
        )
        .property("required_role", text(&["reviewer", "supervisor", "admin"]))
        .property("add_flag", flags)
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .into()
}

/// One object with every member a condition may have, rather than a `oneOf` of its four forms:
/// client generators read a recursive `oneOf` badly (openapi-python-client drops the models).
fn condition() -> Schema {
    let conditions = || {
        ArrayBuilder::new()
            .items(named("PolicyCondition"))
            .min_items(Some(1))
            .max_items(Some(100))
    };
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "A comparison (`field`, `op`, `value`), or `all` or `any` of conditions, or `not` \
             one; one form per object, at most 16 levels deep.",
        ))
        .property(
            "field",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(
                    "`amount`, `currency`, `type`, `reference`, `ai.recommendation`, \
                 `ai.confidence`, `subject.<path>`, or two operands joined by + - * /",
                )),
        )
        .property(
            "op",
            text(&[
                "==", "!=", "<", "<=", ">", ">=", "between", "in", "not_in", "contains", "exists",
            ]),
        )
        .property(
            "value",
            ObjectBuilder::new()
                .description(Some("What the operator compares with (any JSON value)")),
        )
        .property("all", conditions())
        .property("any", conditions())
        .property("not", named("PolicyCondition"))
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .into()
}

/// The OpenAPI components `PolicyDocument`, `PolicyRule`, `PolicyCondition` and `PolicyEffects`.
pub fn openapi_components() -> Vec<(String, RefOr<Schema>)> {
    let rule = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("name", ObjectBuilder::new().schema_type(Type::String))
        .required("name")
        .property("when", named("PolicyCondition"))
        .required("when")
        .property("then", named("PolicyEffects"))
        .required("then")
        .property(
            "stop",
            ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .description(Some("A matching rule with `stop` ends evaluation.")),
        );
    let ai = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("enabled", ObjectBuilder::new().schema_type(Type::Boolean))
        .property(
            "confidence_threshold",
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .minimum(Some(0))
                .maximum(Some(1)),
        );
    let document = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "A decision policy (docs/policy.md); every section is optional.",
        ))
        .property("defaults", named("PolicyEffects"))
        .property("ai", ai)
        .property(
            "rules",
            ArrayBuilder::new()
                .items(named("PolicyRule"))
                .max_items(Some(MAX_RULES)),
        );
    vec![
        ("PolicyDocument".to_owned(), RefOr::T(document.into())),
        ("PolicyRule".to_owned(), RefOr::T(rule.into())),
        ("PolicyCondition".to_owned(), RefOr::T(condition())),
        ("PolicyEffects".to_owned(), RefOr::T(effects())),
    ]
}

/// Where a field holds a policy document.
pub fn document() -> Ref {
    Ref::from_schema_name("PolicyDocument")
}

/// Where a field may hold a policy document or be null.
pub fn optional_document() -> Schema {
    OneOfBuilder::new()
        .item(named("PolicyDocument"))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}
