//! One meaning of `update_mask` for every Update RPC, after AIP-134:
//!
//! - **paths named**: exactly those fields change; a path that is not one of the resource's
//!   updatable fields is INVALID_ARGUMENT on `update_mask` (and nothing changes). Setting a field
//!   to its default value (an empty string, `false`, 0) or clearing it takes naming it.
//! - **`*`** (alone): every updatable field is replaced by the request's value, set or not.
//! - **no mask, or an empty one**: the fields the request sets (non-default values) change.
//!   A request that sets none is INVALID_ARGUMENT: there is nothing to change.
//!
//! The REST gateway fills the mask from the keys of a PATCH body when the client gives no
//! `updateMask`, as grpc-gateway does, so a JSON client can set a field to its default too.

use prost_types::FieldMask;

use crate::{ApiError, ApiResult, error::Violations};

/// One field an Update RPC may change, and whether the request sets it (a non-default value).
#[derive(Debug, Clone, Copy)]
pub struct Updatable {
    pub path: &'static str,
    pub set: bool,
}

/// `path`, set in the request when `set`.
pub const fn field(path: &'static str, set: bool) -> Updatable {
    Updatable { path, set }
}

/// The fields an update changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask(Vec<&'static str>);

impl Mask {
    pub fn contains(&self, path: &str) -> bool {
        self.0.contains(&path)
    }

    pub fn paths(&self) -> &[&'static str] {
        &self.0
    }
}

/// The fields of `updatable` that `mask` selects, by the rules above.
pub fn resolve(mask: Option<&FieldMask>, updatable: &[Updatable]) -> ApiResult<Mask> {
    let paths = mask.map(|m| m.paths.as_slice()).unwrap_or_default();
    let allowed = || updatable.iter().map(|u| u.path).collect::<Vec<_>>().join(", ");
    if paths.is_empty() {
        let set: Vec<&'static str> = updatable.iter().filter(|u| u.set).map(|u| u.path).collect();
        if set.is_empty() {
            return Err(ApiError::invalid(
                "update_mask",
                format!(
                    "nothing to change: set a field, or name the fields in update_mask (any of {}, or `*`)",
                    allowed()
                ),
            ));
        }
        return Ok(Mask(set));
    }
    if paths.iter().any(|p| p == "*") {
        if paths.len() > 1 {
            return Err(ApiError::invalid("update_mask", "`*` stands alone"));
        }
        return Ok(Mask(updatable.iter().map(|u| u.path).collect()));
    }
    let mut v = Violations::new();
    let mut selected: Vec<&'static str> = Vec::new();
    for path in paths {
        match updatable.iter().find(|u| u.path == path) {
            Some(u) if !selected.contains(&u.path) => selected.push(u.path),
            Some(_) => {}
            None => v.add(
                "update_mask",
                format!("`{path}` cannot be changed; allowed: {} (or `*`)", allowed()),
            ),
        }
    }
    v.into_result()?;
    Ok(Mask(selected))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: [Updatable; 3] = [field("name", true), field("active", false), field("limit", true)];

    fn mask(paths: &[&str]) -> Option<FieldMask> {
        Some(FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        })
    }

    fn field_of(error: ApiError) -> String {
        let status = tonic::Status::from(error);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        status.message().to_string()
    }

    #[test]
    fn named_paths_change_exactly_those_fields_set_or_not() {
        let m = resolve(mask(&["active", "name", "active"]).as_ref(), &FIELDS).expect("valid");
        assert_eq!(m.paths(), ["active", "name"]);
        assert!(!m.contains("limit"));
    }

    #[test]
    fn no_mask_or_an_empty_one_changes_the_fields_the_request_sets() {
        for none in [None, mask(&[])] {
            let m = resolve(none.as_ref(), &FIELDS).expect("valid");
            assert_eq!(m.paths(), ["name", "limit"]);
        }
    }

    #[test]
    fn a_request_that_sets_nothing_and_names_nothing_is_refused() {
        let unset = [field("name", false), field("active", false)];
        let message = field_of(resolve(None, &unset).expect_err("nothing to change"));
        assert!(message.contains("update_mask"), "{message}");
        assert!(message.contains("nothing to change"), "{message}");
    }

    #[test]
    fn the_wildcard_replaces_every_field_and_stands_alone() {
        let m = resolve(mask(&["*"]).as_ref(), &FIELDS).expect("valid");
        assert_eq!(m.paths(), ["name", "active", "limit"]);
        let message = field_of(resolve(mask(&["*", "name"]).as_ref(), &FIELDS).expect_err("mixed"));
        assert!(message.contains("stands alone"), "{message}");
    }

    #[test]
    fn an_unknown_or_nested_path_is_refused_with_the_allowed_ones() {
        for bad in ["id", "name.first", "Name", ""] {
            let message = field_of(resolve(mask(&["name", bad]).as_ref(), &FIELDS).expect_err(bad));
            assert!(message.contains("update_mask"), "{message}");
            assert!(message.contains("allowed: name, active, limit"), "{message}");
        }
    }
}
