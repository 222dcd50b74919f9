//! The `transform` step: sets and removes paths in the event's data, its extensions, or the
//! names the route's steps bind, on the delivery's own copy of the event.

use std::sync::Arc;

use estafeta_config::route_steps::{TransformOp, ValueSource};
use estafeta_core::template::TemplateSet;
use estafeta_core::{SendError, StepOutcome, StepTrace};
use serde_json::{Map, Value};

use super::{End, Prepared, excerpt, trace};

/// Applies `ops` in order; the first failure stops the step and fails the attempt.
pub(super) fn apply(
    route: &str,
    ops: &[TransformOp],
    prepared: &mut Prepared,
    templates: &TemplateSet,
) -> (StepTrace, Option<End>) {
    let mut t = trace("transform", None);
    let mut changed = Vec::new();
    for op in ops {
        let result = match op {
            TransformOp::Set { path, value } => compute(value, prepared, templates)
                .and_then(|v| set(prepared, path, v))
                .map(|()| format!("set {}", path.join("."))),
            TransformOp::Remove { path } => {
                remove(prepared, path).map(|()| format!("removed {}", path.join(".")))
            }
        };
        match result {
            Ok(what) => changed.push(what),
            Err(reason) => {
                let path = match op {
                    TransformOp::Set { path, .. } | TransformOp::Remove { path } => path.join("."),
                };
                let message = format!("route `{route}`: transform step, `{path}`: {reason}");
                t.outcome = StepOutcome::Failed;
                t.detail = Some(message.clone());
                return (t, Some(End::Failed(SendError::final_error(message))));
            }
        }
    }
    t.output = Some(excerpt(&changed.join(", ")));
    (t, None)
}

fn compute(
    value: &ValueSource,
    prepared: &Prepared,
    templates: &TemplateSet,
) -> Result<Value, String> {
    let extra = prepared.extra();
    match value {
        ValueSource::Expr(e) => e.eval(&prepared.event, &extra).map_err(|e| e.to_string()),
        ValueSource::Template(name) => templates
            .render(name, &prepared.event, &extra)
            .map(Value::String)
            .map_err(|e| e.to_string()),
        ValueSource::Literal(v) => Ok(v.clone()),
    }
}

fn set(prepared: &mut Prepared, path: &[String], value: Value) -> Result<(), String> {
    let (first, rest) = path.split_first().ok_or("empty path")?;
    match first.as_str() {
        "data" => {
            let event = Arc::make_mut(&mut prepared.event);
            if rest.is_empty() {
                event.data = Some(value);
                event.data_is_base64 = false;
                return Ok(());
            }
            if event.data_is_base64 {
                return Err("the event's data is binary (data_base64), not an object".to_owned());
            }
            let root = event.data.get_or_insert_with(|| Value::Object(Map::new()));
            set_in(root, rest, value)
        }
        "extensions" => {
            let event = Arc::make_mut(&mut prepared.event);
            match rest {
                [] => match value {
                    Value::Object(m) => {
                        event.extensions = m;
                        Ok(())
                    }
                    _ => Err("extensions must be an object".to_owned()),
                },
                [name, deeper @ ..] => {
                    let slot = event.extensions.entry(name.clone()).or_insert(Value::Null);
                    if deeper.is_empty() {
                        *slot = value;
                        Ok(())
                    } else {
                        set_in(slot, deeper, value)
                    }
                }
            }
        }
        name => {
            let idx = match prepared.bindings.iter().position(|(k, _)| k == name) {
                Some(i) => i,
                None => {
                    prepared.bindings.push((name.to_owned(), Value::Null));
                    prepared.bindings.len() - 1
                }
            };
            let slot = &mut prepared.bindings[idx].1;
            if rest.is_empty() {
                *slot = value;
                Ok(())
            } else {
                set_in(slot, rest, value)
            }
        }
    }
}

/// Sets `path` inside `root`, creating objects on the way; null becomes an object.
fn set_in(root: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let mut current = root;
    for (i, seg) in path.iter().enumerate() {
        if current.is_null() {
            *current = Value::Object(Map::new());
        }
        let Value::Object(map) = current else {
            return Err(format!(
                "`{}` is not an object",
                if i == 0 {
                    "the value".to_owned()
                } else {
                    path[..i].join(".")
                }
            ));
        };
        if i + 1 == path.len() {
            map.insert(seg.clone(), value);
            return Ok(());
        }
        current = map.entry(seg.clone()).or_insert(Value::Null);
    }
    Ok(())
}

fn remove(prepared: &mut Prepared, path: &[String]) -> Result<(), String> {
    let (first, rest) = path.split_first().ok_or("empty path")?;
    let (last, middle) = rest.split_last().ok_or("nothing to remove")?;
    let parent: Option<&mut Value> = match first.as_str() {
        "data" => {
            let event = Arc::make_mut(&mut prepared.event);
            match event.data.as_mut() {
                Some(d) => walk(d, middle),
                None => None,
            }
        }
        "extensions" => {
            let event = Arc::make_mut(&mut prepared.event);
            if middle.is_empty() {
                event.extensions.remove(last);
                return Ok(());
            }
            let (head, tail) = middle.split_first().ok_or("empty path")?;
            event.extensions.get_mut(head).and_then(|v| walk(v, tail))
        }
        name => prepared
            .bindings
            .iter_mut()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| walk(v, middle)),
    };
    if let Some(Value::Object(map)) = parent {
        map.remove(last);
    }
    Ok(())
}

fn walk<'a>(mut v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    for seg in path {
        v = v.as_object_mut()?.get_mut(seg)?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use estafeta_config::route_steps::TransformOp;
    use estafeta_core::event::{TenantId, parse_cloudevent};
    use estafeta_core::expr::Expr;
    use serde_json::json;

    use super::*;

    fn prepared() -> Prepared {
        let ev = parse_cloudevent(
            json!({"specversion":"1.0","id":"1","source":"s","type":"visitor.created",
                   "data":{"after":{"name":"Ana","note":"x","doc":"123"}}}),
            &TenantId::default(),
            "pg",
            Utc::now(),
        )
        .unwrap();
        Prepared {
            event: Arc::new(ev),
            bindings: vec![("lookup".to_owned(), json!({"hits": 3}))],
        }
    }

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn sets_and_removes_paths_in_data_extensions_and_bindings() {
        let mut p = prepared();
        let mut templates = TemplateSet::new();
        templates
            .add("t", "{{ data.after.name }} ({{ lookup.hits }})")
            .unwrap();
        let ops = vec![
            TransformOp::Set {
                path: path("data.alert.level"),
                value: ValueSource::Expr(
                    Expr::compile("lookup.hits > 2 ? 'high' : 'low'").unwrap(),
                ),
            },
            TransformOp::Set {
                path: path("summary"),
                value: ValueSource::Template("t".to_owned()),
            },
            TransformOp::Set {
                path: path("extensions.region"),
                value: ValueSource::Literal(json!("sp")),
            },
            TransformOp::Remove {
                path: path("data.after.note"),
            },
            TransformOp::Remove {
                path: path("data.missing.deeper"),
            },
        ];
        let (t, end) = apply("r", &ops, &mut p, &templates);
        assert!(end.is_none(), "{t:?}");
        assert_eq!(
            p.event.data,
            Some(json!({"after":{"name":"Ana","doc":"123"},"alert":{"level":"high"}}))
        );
        assert_eq!(p.event.extensions["region"], json!("sp"));
        assert_eq!(p.bindings[1], ("summary".to_owned(), json!("Ana (3)")));
        assert!(t.output.unwrap().contains("set data.alert.level"));
    }

    #[test]
    fn setting_inside_a_scalar_fails_the_step_with_the_path() {
        let mut p = prepared();
        let ops = vec![TransformOp::Set {
            path: path("data.after.name.first"),
            value: ValueSource::Literal(json!("A")),
        }];
        let (t, end) = apply("r", &ops, &mut p, &TemplateSet::new());
        assert!(matches!(end, Some(End::Failed(_))));
        let detail = t.detail.unwrap();
        assert!(
            detail.contains("data.after.name.first") && detail.contains("after.name"),
            "{detail}"
        );
    }
}
