//! CEL filter expressions over events (`data.total > 100 && subject.startsWith("br-")`),
//! wrapped so the rest of Estafeta never touches the `cel` crate directly.

use std::fmt;
use std::sync::{Arc, OnceLock};

use cel::{Context, Env, Program, Value as CelValue};
use serde_json::Value;

use crate::event::Event;

/// The variables an expression sees, documented in `docs/configuration.md`.
pub const VARIABLES: &[&str] = &[
    "id",
    "source",
    "type",
    "subject",
    "time",
    "key",
    "tenant",
    "data",
    "extensions",
    "event",
];

fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        // The extensions only fail on a duplicate declaration, which cannot happen on a fresh
        // standard environment; keep whatever was declared if one ever does.
        let _ = env.add_extension(cel::extensions::strings);
        let _ = env.add_extension(cel::extensions::lists);
        let _ = env.add_extension(cel::extensions::math);
        Arc::new(env)
    })
}

/// An expression that failed to compile, with the position inside the expression.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{message} (at line {line}, column {column} of the expression)")]
pub struct CompileError {
    /// 1-based line inside the expression.
    pub line: usize,
    /// 1-based column inside the expression.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// An expression that failed while evaluating an event.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EvalError {
    /// CEL raised an error (missing field, wrong type, …).
    #[error("expression `{expr}` failed: {message}")]
    Execution {
        /// The expression.
        expr: String,
        /// CEL's message.
        message: String,
    },
    /// The expression did not produce a boolean.
    #[error("filter `{expr}` must produce true or false, got {got}")]
    NotBoolean {
        /// The expression.
        expr: String,
        /// The type it produced.
        got: String,
    },
}

/// A compiled CEL expression over an event (and names bound by earlier route steps) that
/// produces any value.
#[derive(Clone)]
pub struct Expr {
    source: String,
    program: Arc<Program>,
    /// Which of [`VARIABLES`] the expression names (bit i = `VARIABLES[i]`): only those are
    /// bound, so an expression on `type` does not pay for converting the payload.
    uses: u16,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expr").field(&self.source).finish()
    }
}

impl Expr {
    /// Compiles `source`.
    ///
    /// # Errors
    /// Every syntax error is reported; the first with its position is returned.
    pub fn compile(source: &str) -> Result<Self, CompileError> {
        if source.trim().is_empty() {
            return Err(CompileError {
                line: 1,
                column: 1,
                message: "empty expression".into(),
            });
        }
        match env().compile(source) {
            Ok(program) => {
                let refs = program.references();
                let mut uses = 0u16;
                for (i, name) in VARIABLES.iter().enumerate() {
                    if refs.has_variable(name) {
                        uses |= 1 << i;
                    }
                }
                Ok(Self {
                    source: source.to_owned(),
                    program: Arc::new(program),
                    uses,
                })
            }
            Err(errs) => {
                let first = errs.errors.first();
                let (line, column) = first.map_or((1, 1), |e| {
                    (
                        usize::try_from(e.pos.0).unwrap_or(1),
                        usize::try_from(e.pos.1).unwrap_or(0) + 1,
                    )
                });
                let message = errs
                    .errors
                    .iter()
                    .map(|e| e.msg.clone())
                    .collect::<Vec<_>>()
                    .join("; ");
                Err(CompileError {
                    line: line.max(1),
                    column,
                    message,
                })
            }
        }
    }

    /// The expression as written.
    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The variable names the expression reads (event names and step-bound names alike);
    /// the variables of comprehensions (`x` in `list.map(x, x * 2)`) are not among them.
    #[must_use]
    pub fn variables(&self) -> Vec<String> {
        let mut free = std::collections::BTreeSet::new();
        free_variables(self.program.expression(), &mut Vec::new(), &mut free);
        free.into_iter().collect()
    }

    fn run(&self, event: &Event, extra: &[(&str, &Value)]) -> Result<CelValue, EvalError> {
        let mut ctx = Context::with_env(Arc::clone(env()));
        bind_event(&mut ctx, event, self.uses);
        for (name, value) in extra {
            ctx.add_variable_from_value(*name, json_to_cel(value));
        }
        self.program
            .execute(&ctx)
            .map_err(|e| EvalError::Execution {
                expr: self.source.clone(),
                message: e.to_string(),
            })
    }

    /// Evaluates the expression against `event` into JSON. `extra` binds more names (for
    /// example the results of enrichment steps).
    ///
    /// # Errors
    /// A runtime CEL error, or a value JSON cannot hold (bytes, a timestamp is written as
    /// RFC 3339 text instead).
    pub fn eval(&self, event: &Event, extra: &[(&str, &Value)]) -> Result<Value, EvalError> {
        let v = self.run(event, extra)?;
        match &v {
            CelValue::Timestamp(t) => Ok(Value::from(t.to_rfc3339())),
            other => other.json().map_err(|e| EvalError::Execution {
                expr: self.source.clone(),
                message: format!("the result cannot be written as JSON: {e}"),
            }),
        }
    }
}

/// A compiled CEL expression that decides whether an event passes.
#[derive(Clone)]
pub struct Filter {
    expr: Expr,
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Filter").field(&self.expr.source).finish()
    }
}

impl Filter {
    /// Compiles `source`.
    ///
    /// # Errors
    /// Every syntax error is reported; the first with its position is returned.
    pub fn compile(source: &str) -> Result<Self, CompileError> {
        Expr::compile(source).map(|expr| Self { expr })
    }

    /// The expression as written.
    #[must_use]
    pub fn source(&self) -> &str {
        &self.expr.source
    }

    /// The variable names the expression reads.
    #[must_use]
    pub fn variables(&self) -> Vec<String> {
        self.expr.variables()
    }

    /// Evaluates the expression against `event`. `extra` binds more names (for example the
    /// results of enrichment steps).
    ///
    /// # Errors
    /// A runtime CEL error or a non-boolean result.
    pub fn matches(&self, event: &Event, extra: &[(&str, &Value)]) -> Result<bool, EvalError> {
        match self.expr.run(event, extra)? {
            CelValue::Bool(b) => Ok(b),
            other => Err(EvalError::NotBoolean {
                expr: self.expr.source.clone(),
                got: format!("{:?}", other.type_of()),
            }),
        }
    }
}

/// Collects the identifiers of `e` not bound by an enclosing comprehension.
fn free_variables(
    e: &cel::IdedExpr,
    scope: &mut Vec<String>,
    out: &mut std::collections::BTreeSet<String>,
) {
    use cel::common::ast::{EntryExpr, Expr as Ast};
    match &e.expr {
        Ast::Ident(name) if !name.starts_with('@') && !scope.iter().any(|s| s == name) => {
            out.insert(name.clone());
        }
        Ast::Call(call) => {
            if let Some(target) = &call.target {
                free_variables(target, scope, out);
            }
            for arg in &call.args {
                free_variables(arg, scope, out);
            }
        }
        Ast::Comprehension(c) => {
            free_variables(&c.iter_range, scope, out);
            free_variables(&c.accu_init, scope, out);
            let depth = scope.len();
            scope.push(c.iter_var.clone());
            scope.extend(c.iter_var2.iter().cloned());
            scope.push(c.accu_var.clone());
            free_variables(&c.loop_cond, scope, out);
            free_variables(&c.loop_step, scope, out);
            free_variables(&c.result, scope, out);
            scope.truncate(depth);
        }
        Ast::List(list) => {
            for el in &list.elements {
                free_variables(el, scope, out);
            }
        }
        Ast::Map(map) => {
            for entry in &map.entries {
                match &entry.expr {
                    EntryExpr::StructField(f) => free_variables(&f.value, scope, out),
                    EntryExpr::MapEntry(m) => {
                        free_variables(&m.key, scope, out);
                        free_variables(&m.value, scope, out);
                    }
                }
            }
        }
        Ast::Struct(st) => {
            for entry in &st.entries {
                if let EntryExpr::StructField(f) = &entry.expr {
                    free_variables(&f.value, scope, out);
                }
            }
        }
        Ast::Select(sel) => free_variables(&sel.operand, scope, out),
        _ => {}
    }
}

fn bind_event(ctx: &mut Context<'_, '_>, event: &Event, uses: u16) {
    for (i, name) in VARIABLES.iter().enumerate() {
        if uses & (1 << i) == 0 {
            continue;
        }
        let value = match *name {
            "id" => CelValue::from(event.ce_id.as_str()),
            "source" => CelValue::from(event.ce_source.as_str()),
            "type" => CelValue::from(event.ty.as_str()),
            "subject" => CelValue::from(event.subject.clone().unwrap_or_default()),
            "key" => CelValue::from(event.key.clone().unwrap_or_default()),
            "tenant" => CelValue::from(event.tenant.as_str()),
            "time" => CelValue::Timestamp(event.time.fixed_offset()),
            "data" => event.data.as_ref().map_or(CelValue::Null, json_to_cel),
            "extensions" => json_to_cel(&Value::Object(event.extensions.clone())),
            _ => json_to_cel(&event.to_cloudevent()),
        };
        ctx.add_variable_from_value(*name, value);
    }
}

/// Converts JSON into a CEL value: integers stay integers, other numbers become doubles.
fn json_to_cel(v: &Value) -> CelValue {
    match v {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                CelValue::Int(i)
            } else if let Some(u) = n.as_u64() {
                CelValue::UInt(u)
            } else {
                CelValue::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(a) => CelValue::List(Arc::new(a.iter().map(json_to_cel).collect())),
        Value::Object(m) => {
            let map: std::collections::HashMap<String, CelValue> =
                m.iter().map(|(k, v)| (k.clone(), json_to_cel(v))).collect();
            CelValue::Map(map.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::event::{TenantId, parse_cloudevent};

    fn event(data: Value, subject: Option<&str>) -> Event {
        let mut v = json!({"specversion":"1.0","id":"1","source":"shop","type":"order.created","data":data});
        if let Some(s) = subject {
            v["subject"] = json!(s);
        }
        parse_cloudevent(v, &TenantId::default(), "http", Utc::now()).unwrap()
    }

    #[test]
    fn evaluates_the_documented_example() {
        let f = Filter::compile(r#"data.total > 100 && subject.startsWith("br-")"#).unwrap();
        assert!(
            f.matches(&event(json!({"total": 150}), Some("br-1")), &[])
                .unwrap()
        );
        assert!(
            !f.matches(&event(json!({"total": 50}), Some("br-1")), &[])
                .unwrap()
        );
        assert!(
            !f.matches(&event(json!({"total": 150}), Some("ar-1")), &[])
                .unwrap()
        );
        assert!(!f.matches(&event(json!({"total": 150}), None), &[]).unwrap());
    }

    #[test]
    fn compares_floats_and_binds_extra_names() {
        let f = Filter::compile("data.total > 10.5 && court.hits > 0").unwrap();
        let court = json!({"hits": 2});
        assert!(
            f.matches(&event(json!({"total": 11.0}), None), &[("court", &court)])
                .unwrap()
        );
    }

    #[test]
    fn binds_only_what_is_named_but_everything_named_works() {
        let ev = event(json!({"total": 5, "items": [1, 2, 3]}), Some("br-1"));
        for src in [
            r#"event.type == "order.created""#,
            "has(data.total) && !has(data.missing)",
            "data.items.exists(x, x > 2)",
            r#"extensions.size() == 0 && tenant == "default" && key == """#,
            r#"time < timestamp("2999-01-01T00:00:00Z") && id == "1" && source == "shop""#,
        ] {
            assert!(
                Filter::compile(src).unwrap().matches(&ev, &[]).unwrap(),
                "{src}"
            );
        }
    }

    #[test]
    fn expressions_produce_json_and_name_their_variables() {
        let ev = event(json!({"total": 5, "name": "Ana"}), Some("br-1"));
        let e = Expr::compile(
            r#"{"big": data.total > 3, "who": data.name + "!", "n": lookup.hits * 2}"#,
        )
        .unwrap();
        let lookup = json!({"hits": 2});
        assert_eq!(
            e.eval(&ev, &[("lookup", &lookup)]).unwrap(),
            json!({"big": true, "who": "Ana!", "n": 4})
        );
        assert_eq!(e.variables(), ["data", "lookup"]);
        let e = Expr::compile("lookup.records.map(r, r.court).exists(c, c == data.court)").unwrap();
        assert_eq!(e.variables(), ["data", "lookup"]);
        assert!(
            Expr::compile("time")
                .unwrap()
                .eval(&ev, &[])
                .unwrap()
                .is_string()
        );
    }

    #[test]
    fn compile_errors_carry_a_position() {
        let e = Filter::compile("data.total >").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.column > 1, "{e:?}");
        assert!(Filter::compile("  ").is_err());
    }

    #[test]
    fn runtime_errors_are_values_not_panics() {
        let f = Filter::compile("data.missing.deeper > 1").unwrap();
        let err = f
            .matches(&event(json!({"total": 1}), None), &[])
            .unwrap_err();
        assert!(err.to_string().contains("data.missing.deeper"));
        let f = Filter::compile("data.total").unwrap();
        assert!(matches!(
            f.matches(&event(json!({"total": 1}), None), &[]),
            Err(EvalError::NotBoolean { .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(src in ".{0,40}") {
            if let Ok(f) = Filter::compile(&src) {
                let _ = f.matches(&event(json!({"a": [1, "x", null]}), Some("s")), &[]);
            }
        }
    }
}
