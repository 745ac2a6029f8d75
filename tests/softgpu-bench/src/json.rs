//! A small JSON writer for the result lines: objects keep their insertion
//! order, non-finite numbers become `null`.

use std::fmt::Write;

#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Obj),
}

/// A JSON object under construction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Obj(Vec<(String, Json)>);

impl Obj {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Sets `key` (replacing an earlier value of the same key).
    pub fn put(&mut self, key: &str, value: impl Into<Json>) -> &mut Self {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
        self
    }

    /// Copies every entry of `other` in.
    pub fn extend(&mut self, other: Obj) -> &mut Self {
        for (k, v) in other.0 {
            self.put(&k, v);
        }
        self
    }

    pub fn get(&self, key: &str) -> Option<&Json> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The serialised object, on one line.
    pub fn to_line(&self) -> String {
        let mut s = String::new();
        write_obj(&mut s, self);
        s
    }
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_obj(out: &mut String, o: &Obj) {
    out.push('{');
    for (i, (k, v)) in o.0.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, k);
        out.push(':');
        write_value(out, v);
    }
    out.push('}');
}

fn write_value(out: &mut String, v: &Json) {
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Json::UInt(u) => {
            let _ = write!(out, "{u}");
        }
        Json::Num(f) if f.is_finite() => {
            // Six decimals are plenty for times and ratios; Display never
            // uses an exponent, so this is always a valid JSON number.
            let r = (f * 1e6).round() / 1e6;
            let _ = write!(out, "{r}");
        }
        Json::Num(_) => out.push_str("null"),
        Json::Str(s) => write_str(out, s),
        Json::Arr(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, v);
            }
            out.push(']');
        }
        Json::Obj(o) => write_obj(out, o),
    }
}

impl From<bool> for Json {
    fn from(v: bool) -> Self {
        Json::Bool(v)
    }
}
impl From<i32> for Json {
    fn from(v: i32) -> Self {
        Json::Int(v.into())
    }
}
impl From<i64> for Json {
    fn from(v: i64) -> Self {
        Json::Int(v)
    }
}
impl From<u32> for Json {
    fn from(v: u32) -> Self {
        Json::UInt(v.into())
    }
}
impl From<u64> for Json {
    fn from(v: u64) -> Self {
        Json::UInt(v)
    }
}
impl From<usize> for Json {
    fn from(v: usize) -> Self {
        Json::UInt(v as u64)
    }
}
impl From<f64> for Json {
    fn from(v: f64) -> Self {
        Json::Num(v)
    }
}
impl From<&str> for Json {
    fn from(v: &str) -> Self {
        Json::Str(v.to_string())
    }
}
impl From<String> for Json {
    fn from(v: String) -> Self {
        Json::Str(v)
    }
}
impl From<Obj> for Json {
    fn from(v: Obj) -> Self {
        Json::Obj(v)
    }
}
impl<T: Into<Json>> From<Vec<T>> for Json {
    fn from(v: Vec<T>) -> Self {
        Json::Arr(v.into_iter().map(Into::into).collect())
    }
}
impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(v: Option<T>) -> Self {
        v.map_or(Json::Null, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_nested_values() {
        let mut inner = Obj::new();
        inner.put("a", 1u64).put("b", -2i64);
        let mut o = Obj::new();
        o.put("s", "x\"y\\z\n\u{1}")
            .put("f", 0.5)
            .put("nan", f64::NAN)
            .put("big", 1e20)
            .put("none", None::<u64>)
            .put("arr", vec![1u32, 2])
            .put("obj", inner)
            .put("t", true);
        assert_eq!(
            o.to_line(),
            r#"{"s":"x\"y\\z\n\u0001","f":0.5,"nan":null,"big":100000000000000000000,"none":null,"arr":[1,2],"obj":{"a":1,"b":-2},"t":true}"#
        );
    }

    #[test]
    fn put_replaces() {
        let mut o = Obj::new();
        o.put("k", 1u64).put("k", 2u64);
        assert_eq!(o.to_line(), r#"{"k":2}"#);
        assert_eq!(o.get("k"), Some(&Json::UInt(2)));
    }
}
