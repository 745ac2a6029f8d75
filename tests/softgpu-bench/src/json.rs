//! The result records: JSON objects (serde_json's, their keys kept in
//! insertion order), built with [`Put::put`].

pub use serde_json::Value as Json;

/// A result record under construction.
pub type Obj = serde_json::Map<String, Json>;

/// Chained insertion into a record.
pub trait Put {
    /// Sets `key` (replacing an earlier value of the same key, in its
    /// place). Non-finite numbers become `null`.
    fn put(&mut self, key: &str, value: impl Into<Json>) -> &mut Self;
}

impl Put for Obj {
    fn put(&mut self, key: &str, value: impl Into<Json>) -> &mut Self {
        self.insert(key.to_string(), value.into());
        self
    }
}

/// The record on one line.
pub fn line(o: &Obj) -> String {
    // A map with string keys always serialises.
    serde_json::to_string(o).expect("a JSON object serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_order_and_schema() {
        let mut inner = Obj::new();
        inner.put("b", -2i64).put("a", 1u64);
        let mut o = Obj::new();
        o.put("s", "x\"y\\z\n\u{1}")
            .put("f", 0.5)
            .put("nan", f64::NAN)
            .put("none", None::<u64>)
            .put("arr", vec![1u32, 2])
            .put("obj", inner)
            .put("t", true)
            .put("s", "again");
        assert_eq!(
            line(&o),
            r#"{"s":"again","f":0.5,"nan":null,"none":null,"arr":[1,2],"obj":{"b":-2,"a":1},"t":true}"#
        );
        assert_eq!(o.get("t"), Some(&Json::Bool(true)));
        assert_eq!(o["arr"][1].as_u64(), Some(2));
    }
}
