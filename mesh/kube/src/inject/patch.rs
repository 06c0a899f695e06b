//! The JSON Patch (RFC 6902) that turns an object into its injected self,
//! for the admission webhook's response.
//!
//! A plain element-by-element diff (json-patch's `diff`) would describe a
//! container inserted at the front as "replace every field of container 0
//! with the proxy's, add the app at 1". Applied by the API server to the
//! object it holds, which may carry fields this build's k8s-openapi does
//! not know, that would leave the app's unknown fields on the proxy. This
//! diff instead inserts new array elements where they go and never touches
//! the elements that were there.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::{Map, Value};

/// The operations that turn `before` into `after`.
pub fn diff(before: &Value, after: &Value) -> Patch {
    let mut ops = Vec::new();
    walk(before, after, &mut PointerBuf::root(), &mut ops);
    Patch(ops)
}

fn walk(before: &Value, after: &Value, at: &mut PointerBuf, ops: &mut Vec<PatchOperation>) {
    match (before, after) {
        _ if before == after => {}
        (Value::Object(b), Value::Object(a)) => objects(b, a, at, ops),
        (Value::Array(b), Value::Array(a)) => arrays(b, a, at, ops),
        _ => ops.push(PatchOperation::Replace(ReplaceOperation { path: at.clone(), value: after.clone() })),
    }
}

fn objects(before: &Map<String, Value>, after: &Map<String, Value>, at: &mut PointerBuf, ops: &mut Vec<PatchOperation>) {
    for key in before.keys().filter(|k| !after.contains_key(*k)) {
        at.push_back(key);
        ops.push(PatchOperation::Remove(RemoveOperation { path: at.clone() }));
        at.pop_back();
    }
    for (key, value) in after {
        at.push_back(key);
        match before.get(key) {
            Some(old) => walk(old, value, at, ops),
            None => ops.push(PatchOperation::Add(AddOperation { path: at.clone(), value: value.clone() })),
        }
        at.pop_back();
    }
}

/// Insertions when `before` is `after` with elements left out (in order);
/// otherwise the whole array is replaced.
fn arrays(before: &[Value], after: &[Value], at: &mut PointerBuf, ops: &mut Vec<PatchOperation>) {
    let mut inserts = Vec::new();
    let mut kept = before.iter().peekable();
    for (i, value) in after.iter().enumerate() {
        if kept.peek() == Some(&value) {
            kept.next();
        } else {
            inserts.push((i, value));
        }
    }
    if kept.peek().is_some() {
        ops.push(PatchOperation::Replace(ReplaceOperation { path: at.clone(), value: Value::Array(after.to_vec()) }));
        return;
    }
    // Applied in order, each index is the element's final position: the
    // ones before it are all in place by then.
    for (i, value) in inserts {
        at.push_back(i);
        ops.push(PatchOperation::Add(AddOperation { path: at.clone(), value: value.clone() }));
        at.pop_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn roundtrip(before: Value, after: Value) -> Patch {
        let patch = diff(&before, &after);
        let mut doc = before;
        json_patch::patch(&mut doc, &patch).unwrap();
        assert_eq!(doc, after);
        patch
    }

    #[test]
    fn inserted_elements_are_added_where_they_go_and_kept_ones_are_untouched() {
        let patch = roundtrip(
            json!({"spec": {"containers": [{"name": "app"}, {"name": "log"}]}}),
            json!({"spec": {"containers": [{"name": "proxy"}, {"name": "app"}, {"name": "x"}, {"name": "log"}, {"name": "y"}]}}),
        );
        let text = serde_json::to_string(&patch).unwrap();
        assert_eq!(
            text,
            r#"[{"op":"add","path":"/spec/containers/0","value":{"name":"proxy"}},{"op":"add","path":"/spec/containers/2","value":{"name":"x"}},{"op":"add","path":"/spec/containers/4","value":{"name":"y"}}]"#
        );
        // The API server's copy has a field this build does not know; the
        // app keeps it and the proxy does not get it.
        let mut served = json!({"spec": {"containers": [{"name": "app", "future": 1}, {"name": "log"}]}});
        json_patch::patch(&mut served, &patch).unwrap();
        assert_eq!(served["spec"]["containers"][0], json!({"name": "proxy"}));
        assert_eq!(served["spec"]["containers"][1], json!({"name": "app", "future": 1}));
    }

    #[test]
    fn keys_with_slashes_and_new_maps_are_added() {
        let patch = roundtrip(
            json!({"metadata": {"annotations": {"a": "1"}}, "spec": {}}),
            json!({"metadata": {"annotations": {"a": "1", "weft.io/injected": "img"}}, "spec": {"volumes": [{"name": "v"}]}}),
        );
        let text = serde_json::to_string(&patch).unwrap();
        assert!(text.contains(r#""path":"/metadata/annotations/weft.io~1injected""#), "{text}");
        assert!(text.contains(r#""path":"/spec/volumes","value":[{"name":"v"}]"#), "{text}");
    }

    #[test]
    fn changed_and_removed_values_are_replaced_and_removed() {
        roundtrip(json!({"a": [1, 2, 3], "b": 1, "c": {"d": 1}}), json!({"a": [3, 1], "b": 2, "c": {}}));
        assert!(diff(&json!({"a": [1]}), &json!({"a": [1]})).0.is_empty());
    }
}
