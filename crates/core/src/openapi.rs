//! The JSON schemas of the maps a request carries (labels, budgets, usage), named in the
//! OpenAPI document and bounded as the server checks them. Patterns and bounds here are
//! literals; the server's tests hold them to the constants they stand for.

use std::borrow::Cow;

use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{Ref, RefOr};

/// What [`crate::spec::validate_name`] takes: keys, capabilities, error kinds, names of
/// signals.
pub const NAME_PATTERN: &str = r"^[A-Za-z0-9_.:/-]{1,128}$";
/// What [`crate::spec::validate_path_name`] takes: names of schedules and triggers, which are
/// path segments, so neither `.` nor `..`.
pub const PATH_NAME_PATTERN: &str = r"^(?!\.\.?$)[A-Za-z0-9_.:/-]{1,128}$";
/// A rate limit's key: 1 to 128 bytes (declared apart) without control characters, `{` or
/// `}`, and neither `.` nor `..`.
pub const LIMIT_KEY_PATTERN: &str = r"^(?!\.\.?$)[^{}\x00-\x1f\x7f-\x9f]*$";
/// A task key in a dependency: a name, or a for_each item's key `NAME[N]`.
pub const KEY_PATTERN: &str = r"^[A-Za-z0-9_.:/-]{1,128}(\[[0-9]+\])?$";
/// Text without control characters (Unicode category Cc).
pub const NO_CONTROL_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]*$";
/// A label's key.
pub const LABEL_KEY_PATTERN: &str = r"^[a-z0-9_.-]{1,63}$";
/// A usage unit's name.
pub const UNIT_PATTERN: &str = r"^[a-z0-9_.-]{1,64}$";

fn string(pattern: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .pattern(Some(pattern))
}

/// A workflow's labels (`labels`): at most 16, keys of 1 to 63 characters among `a-z0-9_.-`,
/// values of 1 to 255 bytes without control characters.
pub struct LabelsSchema;

impl utoipa::PartialSchema for LabelsSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::Object))
            .description(Some(
                "Labels, `{\"tenant\": \"acme\"}`: at most 16; keys of 1 to 63 characters among \
                 `a-z0-9_.-`; values of 1 to 255 bytes without control characters.",
            ))
            .property_names(Some(string(LABEL_KEY_PATTERN)))
            .additional_properties(Some(
                string(NO_CONTROL_PATTERN)
                    .min_length(Some(1))
                    .max_length(Some(255)),
            ))
            .max_properties(Some(16))
            .into()
    }
}

impl utoipa::ToSchema for LabelsSchema {
    fn name() -> Cow<'static, str> {
        "Labels".into()
    }
}

/// A workflow's budgets per usage unit: at most 32 units, each named by 1 to 64 of
/// `a-z0-9_.-`.
pub struct BudgetsSchema;

impl utoipa::PartialSchema for BudgetsSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::Object))
            .description(Some(
                "Budgets per usage unit, `{\"usd\": {\"limit\": 5, \"policy\": \"pause\"}}`: at \
                 most 32 units, each named by 1 to 64 of `a-z0-9_.-`.",
            ))
            .property_names(Some(string(UNIT_PATTERN)))
            .additional_properties(Some(Ref::from_schema_name("Budget")))
            .max_properties(Some(32))
            .into()
    }
}

impl utoipa::ToSchema for BudgetsSchema {
    fn name() -> Cow<'static, str> {
        "Budgets".into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        use utoipa::PartialSchema;
        schemas.push((
            "Budget".into(),
            <crate::usage::Budget as PartialSchema>::schema(),
        ));
        <crate::usage::Budget as utoipa::ToSchema>::schemas(schemas);
    }
}

/// What agents report spending, per unit: at most 32 units, each named by 1 to 64 of
/// `a-z0-9_.-`, amounts from 0 to 1e12.
pub struct UsageSchema;

impl utoipa::PartialSchema for UsageSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::Object))
            .description(Some(
                "Amounts per usage unit, `{\"tokens\": 1532, \"usd\": 0.012}`: at most 32 units, \
                 each named by 1 to 64 of `a-z0-9_.-`; amounts from 0 to 1e12, counted to six \
                 decimals.",
            ))
            .property_names(Some(string(UNIT_PATTERN)))
            .additional_properties(Some(
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::Number))
                    .minimum(Some(0))
                    .maximum(Some(1e12)),
            ))
            .max_properties(Some(32))
            .into()
    }
}

impl utoipa::ToSchema for UsageSchema {
    fn name() -> Cow<'static, str> {
        "Usage".into()
    }
}

/// A named string schema with a pattern and a description.
macro_rules! pattern_schema {
    ($ty:ty, $name:literal, $pattern:expr, $description:literal) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                string($pattern).description(Some($description)).into()
            }
        }

        impl utoipa::ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                $name.into()
            }
        }
    };
}

/// A name as [`crate::spec::validate_name`] takes it (an error kind, say).
pub struct NameSchema;

pattern_schema!(
    NameSchema,
    "Name",
    NAME_PATTERN,
    "1 to 128 letters, digits and `-_.:/`."
);
pattern_schema!(
    crate::ids::TaskKey,
    "TaskKey",
    KEY_PATTERN,
    "The user's name for a task, unique within its workflow; dependencies refer to tasks by \
     key: 1 to 128 letters, digits and `-_.:/`, or a for_each item's key `KEY[N]`."
);
pattern_schema!(
    crate::ids::Capability,
    "Capability",
    NAME_PATTERN,
    "A capability an agent offers and a task requires, such as `summarize` or `gpu`: 1 to 128 \
     letters, digits and `-_.:/`."
);
